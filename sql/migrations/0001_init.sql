-- gim schema, version 1. Every row belongs to an app (tenant); every key starts with app_id so one
-- app's data is never reachable through another's ids.
-- Applied by `gim-logic migrate` (sqlx migrations; re-running is a no-op).

CREATE TABLE IF NOT EXISTS app (
    app_id       BIGINT       NOT NULL AUTO_INCREMENT,
    name         VARCHAR(64)  NOT NULL,
    -- Ed25519 public key (32 bytes) that verifies the app's device and server tokens. The private
    -- key is printed once by `gim-logic app create` and never stored here.
    public_key   VARBINARY(32) NOT NULL,
    created_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id),
    UNIQUE KEY uk_app_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS user (
    app_id       BIGINT        NOT NULL,
    user_id      BIGINT        NOT NULL,
    nickname     VARCHAR(64)   NOT NULL DEFAULT '',
    sex          TINYINT       NOT NULL DEFAULT 0,
    avatar_url   VARCHAR(512)  NOT NULL DEFAULT '',
    extra        VARCHAR(2048) NOT NULL DEFAULT '',
    created_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS device (
    device_id      BIGINT       NOT NULL AUTO_INCREMENT,
    app_id         BIGINT       NOT NULL,
    -- 0 until the device first signs in; a device is then bound to that user (1005 otherwise).
    user_id        BIGINT       NOT NULL DEFAULT 0,
    type           TINYINT      NOT NULL,
    brand          VARCHAR(64)  NOT NULL DEFAULT '',
    model          VARCHAR(64)  NOT NULL DEFAULT '',
    system_version VARCHAR(64)  NOT NULL DEFAULT '',
    sdk_version    VARCHAR(64)  NOT NULL DEFAULT '',
    created_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (device_id),
    KEY idx_device_user (app_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Highest seq each device has acknowledged; only ever moves forward.
CREATE TABLE IF NOT EXISTS device_ack (
    app_id       BIGINT      NOT NULL,
    user_id      BIGINT      NOT NULL,
    device_id    BIGINT      NOT NULL,
    ack          BIGINT      NOT NULL DEFAULT 0,
    updated_at   DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, user_id, device_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS im_group (
    app_id       BIGINT        NOT NULL,
    group_id     BIGINT        NOT NULL,
    name         VARCHAR(64)   NOT NULL,
    avatar_url   VARCHAR(512)  NOT NULL DEFAULT '',
    introduction VARCHAR(1024) NOT NULL DEFAULT '',
    -- 1 normal (write diffusion), 2 large (read diffusion).
    type         TINYINT       NOT NULL,
    owner_id     BIGINT        NOT NULL,
    user_num     INT           NOT NULL DEFAULT 0,
    extra        VARCHAR(2048) NOT NULL DEFAULT '',
    created_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, group_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS group_member (
    app_id       BIGINT        NOT NULL,
    group_id     BIGINT        NOT NULL,
    user_id      BIGINT        NOT NULL,
    -- 1 admin, 2 member.
    member_type  TINYINT       NOT NULL DEFAULT 2,
    remarks      VARCHAR(64)   NOT NULL DEFAULT '',
    extra        VARCHAR(2048) NOT NULL DEFAULT '',
    created_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, group_id, user_id),
    KEY idx_member_user (app_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Per-user message list (write diffusion): one row per copy, unique on owner + seq.
CREATE TABLE IF NOT EXISTS user_message (
    app_id           BIGINT         NOT NULL,
    user_id          BIGINT         NOT NULL,
    seq              BIGINT         NOT NULL,
    message_id       BIGINT         NOT NULL,
    request_id       BIGINT         NOT NULL DEFAULT 0,
    sender_type      TINYINT        NOT NULL,
    sender_id        BIGINT         NOT NULL,
    sender_device_id BIGINT         NOT NULL DEFAULT 0,
    receiver_type    TINYINT        NOT NULL,
    receiver_id      BIGINT         NOT NULL,
    -- Comma-separated @-mentioned user ids.
    to_user_ids      VARCHAR(2048)  NOT NULL DEFAULT '',
    -- Protobuf-encoded MessageBody.
    body             VARBINARY(16384) NOT NULL,
    send_time        BIGINT         NOT NULL,
    status           TINYINT        NOT NULL DEFAULT 1,
    created_at       DATETIME(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, user_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Large-group message list (read diffusion): stored once, unique on group + seq.
CREATE TABLE IF NOT EXISTS group_message (
    app_id           BIGINT         NOT NULL,
    group_id         BIGINT         NOT NULL,
    seq              BIGINT         NOT NULL,
    message_id       BIGINT         NOT NULL,
    request_id       BIGINT         NOT NULL DEFAULT 0,
    sender_type      TINYINT        NOT NULL,
    sender_id        BIGINT         NOT NULL,
    sender_device_id BIGINT         NOT NULL DEFAULT 0,
    to_user_ids      VARCHAR(2048)  NOT NULL DEFAULT '',
    body             VARBINARY(16384) NOT NULL,
    send_time        BIGINT         NOT NULL,
    status           TINYINT        NOT NULL DEFAULT 1,
    created_at       DATETIME(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, group_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Idempotent sends: one row per (sender, client request id). A retry finds the row and returns the
-- first result instead of storing the message again.
CREATE TABLE IF NOT EXISTS send_request (
    app_id            BIGINT      NOT NULL,
    sender_type       TINYINT     NOT NULL,
    sender_id         BIGINT      NOT NULL,
    client_request_id BIGINT      NOT NULL,
    message_id        BIGINT      NOT NULL,
    sender_seq        BIGINT      NOT NULL DEFAULT 0,
    created_at        DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, sender_type, sender_id, client_request_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Sequence high-water marks. Redis hands out seqs from blocks reserved here; a block is reserved
-- (max_seq raised) before any seq from it is used, so after a Redis flush allocation resumes above
-- max_seq and no seq is ever reused. object_type: 1 user list, 2 large-group list.
CREATE TABLE IF NOT EXISTS seq_block (
    app_id       BIGINT      NOT NULL,
    object_type  TINYINT     NOT NULL,
    object_id    BIGINT      NOT NULL,
    max_seq      BIGINT      NOT NULL,
    updated_at   DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, object_type, object_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Segment id allocation (message ids, group ids): a process reserves `step` ids at a time.
CREATE TABLE IF NOT EXISTS id_segment (
    name         VARCHAR(32) NOT NULL,
    max_id       BIGINT      NOT NULL,
    step         INT         NOT NULL,
    updated_at   DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

INSERT IGNORE INTO id_segment (name, max_id, step) VALUES ('message', 0, 1000), ('group', 0, 100);
