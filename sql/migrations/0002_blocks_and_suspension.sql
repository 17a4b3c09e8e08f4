-- Blocks and suspension (issue 19 item 5).

-- A suspended app's clients cannot sign in, call LogicClientExt or send; its live connections are
-- closed. Its business server keeps its API (and lifts the suspension), but cannot send or push.
ALTER TABLE app ADD COLUMN suspended TINYINT NOT NULL DEFAULT 0;

-- Per-user rules set by the app's business server or operator. device_id 0 is the user's row;
-- rows with a device id hold per-device rules (token revocation).
CREATE TABLE IF NOT EXISTS user_policy (
    app_id       BIGINT      NOT NULL,
    user_id      BIGINT      NOT NULL,
    device_id    BIGINT      NOT NULL DEFAULT 0,
    -- 1: the user cannot sign in, call or send; its live connections are closed.
    suspended    TINYINT     NOT NULL DEFAULT 0,
    updated_at   DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, user_id, device_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- user_id has blocked blocked_user_id: 1:1 sends from blocked_user_id to user_id get 1020.
CREATE TABLE IF NOT EXISTS user_block (
    app_id          BIGINT      NOT NULL,
    user_id         BIGINT      NOT NULL,
    blocked_user_id BIGINT      NOT NULL,
    created_at      DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, user_id, blocked_user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
