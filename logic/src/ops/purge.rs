//! `gim-logic purge`: deletes stored messages older than a retention period.
//!
//! What goes: message copies (`user_message`, `group_message`) and the idempotency records of
//! their sends (`send_request`, whose retries could otherwise find a claim whose message is gone)
//! written before the cutoff. What stays: users, devices, groups, acks and the seq high-water
//! marks (`seq_block`), so seqs are never reused and a device's later sync starts at the oldest
//! message kept.
//!
//! Lists are walked in key order, [`LISTS_PER_STEP`] lists at a time, and each step deletes at
//! most [`ROWS_PER_DELETE`] rows per statement (its own transaction): the whole run reads each
//! row about once, and no lock is held long, so it runs beside live traffic.

use gim_common::AppId;
use sqlx::MySqlPool;

/// Lists (users, groups, senders) whose old rows one step deletes.
pub const LISTS_PER_STEP: i64 = 200;
/// Rows one DELETE removes at most (one short transaction).
pub const ROWS_PER_DELETE: i64 = 5_000;

/// A table's list of rows: rows of one list share `prefix` values and differ in `cursor` order.
struct Table {
    name: &'static str,
    /// The primary key's columns after `app_id` that name one list.
    list: &'static [&'static str],
}

const TABLES: &[Table] = &[
    Table {
        name: "user_message",
        list: &["user_id"],
    },
    Table {
        name: "group_message",
        list: &["group_id"],
    },
    Table {
        name: "send_request",
        list: &["sender_type", "sender_id"],
    },
];

/// Rows deleted (or, in a dry run, that would be) per table.
pub type Purged = Vec<(&'static str, u64)>;

/// Deletes rows written more than `days` days ago, of one app or of all. `days` must be at least
/// 1. With `dry_run`, only counts.
pub async fn purge(
    pool: &MySqlPool,
    app: Option<AppId>,
    days: u32,
    dry_run: bool,
) -> anyhow::Result<Purged> {
    anyhow::ensure!(days >= 1, "--older-than-days must be at least 1");
    // One cutoff for the whole run, fixed now: rows written while it runs are never candidates.
    let cutoff: String =
        sqlx::query_scalar("SELECT DATE_FORMAT(NOW(3) - INTERVAL ? DAY, '%Y-%m-%d %H:%i:%s.%f')")
            .bind(days)
            .fetch_one(pool)
            .await?;
    let apps: Vec<i64> = match app {
        Some(a) => {
            let found: Option<i64> = sqlx::query_scalar("SELECT app_id FROM app WHERE app_id = ?")
                .bind(a.0)
                .fetch_optional(pool)
                .await?;
            anyhow::ensure!(found.is_some(), "no app with id {a}");
            vec![a.0]
        }
        None => {
            sqlx::query_scalar("SELECT app_id FROM app ORDER BY app_id")
                .fetch_all(pool)
                .await?
        }
    };
    let mut out = Purged::new();
    for t in TABLES {
        let mut n = 0;
        for &a in &apps {
            n += purge_table(pool, t, a, &cutoff, dry_run).await?;
        }
        out.push((t.name, n));
    }
    Ok(out)
}

async fn purge_table(
    pool: &MySqlPool,
    t: &Table,
    app: i64,
    cutoff: &str,
    dry_run: bool,
) -> anyhow::Result<u64> {
    // Leading list columns (all but the last) take few values (sender_type): walk each; the
    // last one is walked with a cursor so every step is an index range.
    let (lead, last) = t.list.split_at(t.list.len() - 1);
    let last = last[0];
    let leads: Vec<Vec<i64>> = if lead.is_empty() {
        vec![vec![]]
    } else {
        let cols = lead.join(", ");
        let rows: Vec<sqlx::mysql::MySqlRow> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT {cols} FROM {} WHERE app_id = ? ORDER BY {cols}",
            t.name
        )))
        .bind(app)
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                (0..lead.len())
                    .map(|i| sqlx::Row::try_get::<i64, _>(r, i))
                    .collect()
            })
            .collect::<Result<_, _>>()?
    };
    let mut total = 0u64;
    for lv in leads {
        let fixed: String = lead
            .iter()
            .zip(&lv)
            .map(|(c, v)| format!(" AND {c} = {v}"))
            .collect();
        let mut after = i64::MIN;
        loop {
            // The next LISTS_PER_STEP lists: a loose index scan over the primary key.
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT DISTINCT {last} FROM {} WHERE app_id = ?{fixed} AND {last} > ? \
                 ORDER BY {last} LIMIT ?",
                t.name
            )))
            .bind(app)
            .bind(after)
            .bind(LISTS_PER_STEP)
            .fetch_all(pool)
            .await?;
            let (Some(&first), Some(&end)) = (ids.first(), ids.last()) else {
                break;
            };
            let range = format!(
                "FROM {} WHERE app_id = ?{fixed} AND {last} BETWEEN ? AND ? AND created_at < ?",
                t.name
            );
            if dry_run {
                let n: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) {range}")))
                        .bind(app)
                        .bind(first)
                        .bind(end)
                        .bind(cutoff)
                        .fetch_one(pool)
                        .await?;
                total += n as u64;
            } else {
                loop {
                    let done = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE {range} LIMIT ?")))
                        .bind(app)
                        .bind(first)
                        .bind(end)
                        .bind(cutoff)
                        .bind(ROWS_PER_DELETE)
                        .execute(pool)
                        .await?
                        .rows_affected();
                    total += done;
                    if done < ROWS_PER_DELETE as u64 {
                        break;
                    }
                }
            }
            after = end;
        }
    }
    Ok(total)
}
