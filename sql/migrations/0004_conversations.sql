-- gim schema: conversations (issue 20).

-- One row per (owner, peer): a peer user (1:1, or a business sender id), a normal group, or a
-- large group. Rows of user lists are written in the same transaction as the message copies they
-- count (`user_message`); large groups get a row only when their member marks read, pins or mutes
-- (their unread count is the group's last seq minus read_seq, computed on read).
CREATE TABLE IF NOT EXISTS conversation (
    app_id            BIGINT       NOT NULL,
    owner_id          BIGINT       NOT NULL,
    -- ReceiverType: 1 user, 2 normal group, 3 large group.
    peer_type         TINYINT      NOT NULL,
    peer_id           BIGINT       NOT NULL,
    last_seq          BIGINT       NOT NULL DEFAULT 0,
    last_message_id   BIGINT       NOT NULL DEFAULT 0,
    last_sender_type  TINYINT      NOT NULL DEFAULT 0,
    last_sender_id    BIGINT       NOT NULL DEFAULT 0,
    last_send_time    BIGINT       NOT NULL DEFAULT 0,
    last_type         TINYINT      NOT NULL DEFAULT 0,
    preview           VARCHAR(32)  NOT NULL DEFAULT '',
    -- Messages after read_seq not sent by the owner.
    unread            INT          NOT NULL DEFAULT 0,
    read_seq          BIGINT       NOT NULL DEFAULT 0,
    pinned            TINYINT      NOT NULL DEFAULT 0,
    muted             TINYINT      NOT NULL DEFAULT 0,
    deleted           TINYINT      NOT NULL DEFAULT 0,
    -- The seq (in the owner's list) of the latest change: a message copy, or the READ/UPDATED
    -- notice a mark-read or an update stores.
    version           BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, owner_id, peer_type, peer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Per-app switch of read receipts (MARK_READ still moves the reader's own read position).
ALTER TABLE app ADD COLUMN read_receipts TINYINT NOT NULL DEFAULT 1;
