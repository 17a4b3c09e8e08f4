-- Token revocation and key rotation (issue 19 item 4).

ALTER TABLE app
    -- 1: the original key (app.public_key, kid "") no longer verifies tokens.
    ADD COLUMN key_retired        TINYINT NOT NULL DEFAULT 0,
    -- 0: no limit. Otherwise tokens whose lifetime (exp - iat, or exp - now without iat) is
    -- longer are refused.
    ADD COLUMN max_token_ttl_secs BIGINT  NOT NULL DEFAULT 0,
    -- 1: tokens without iat and jti (older minters) are refused.
    ADD COLUMN require_token_ids  TINYINT NOT NULL DEFAULT 0;

-- Forced logout: device tokens of the user (device_id 0) or of one device issued at or before
-- this second (Unix seconds) are refused, and so are tokens without iat; 0 = none.
ALTER TABLE user_policy ADD COLUMN tokens_after BIGINT NOT NULL DEFAULT 0;

-- Further public keys of an app, named by the `kid` in a token's header.
CREATE TABLE IF NOT EXISTS app_key (
    app_id       BIGINT        NOT NULL,
    kid          VARCHAR(64)   NOT NULL,
    public_key   VARBINARY(32) NOT NULL,
    created_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    -- Set when retired: tokens naming this kid are refused. A retired kid is never reused.
    retired_at   DATETIME(3)   NULL,
    PRIMARY KEY (app_id, kid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Revoked token ids, per user (user 0: server tokens). A row is kept until the token would
-- have expired anyway.
CREATE TABLE IF NOT EXISTS revoked_token (
    app_id       BIGINT       NOT NULL,
    user_id      BIGINT       NOT NULL,
    -- FNV-1a 64 of jti: the cache loads integers only.
    jti_hash     BIGINT       NOT NULL,
    jti          VARCHAR(128) NOT NULL,
    expires_at   BIGINT       NOT NULL,
    created_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id, user_id, jti_hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
