-- Per-app rate limits and quotas (issue 19 item 3). One row per app that set any; an app
-- without a row, and each column left 0, takes the server's default (config
-- `logic.send_per_sec`, `logic.send_burst`). -1 = no limit.

CREATE TABLE IF NOT EXISTS app_limits (
    app_id             BIGINT      NOT NULL,
    -- Messages one user may send per second, sustained, and at once above that rate.
    send_per_sec       INT         NOT NULL DEFAULT 0,
    send_burst         INT         NOT NULL DEFAULT 0,
    -- Quotas: the largest message body (bytes, at most the server's logic.max_body_bytes), the
    -- most members of one group, the most live connections of one user.
    max_body_bytes     INT         NOT NULL DEFAULT 0,
    max_group_members  INT         NOT NULL DEFAULT 0,
    max_conns_per_user INT         NOT NULL DEFAULT 0,
    updated_at         DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                   ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (app_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
