//! MySQL plumbing every domain shares: row types and their column lists ([`rows`]), integer
//! literal batches ([`lit`]), the one `IN (?, …)` builder, the statement deadline, and batchers
//! of MySQL work on the shared pool.

pub mod lit;
pub mod rows;

use crate::batch::Batcher;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use sqlx::{MySql, MySqlPool, QueryBuilder};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Rows per multi-row INSERT (at most 14 placeholders a row; MySQL allows 65 535 a statement).
pub const INSERT_CHUNK: usize = 2000;
/// Most items in one batch of a batcher.
pub const BATCH_MAX: usize = 64;
/// Batches in flight at once per batcher (each holds one pooled connection).
pub const BATCH_CONCURRENCY: usize = 4;

/// Attempts of a transaction MariaDB picked as a deadlock victim.
pub const DEADLOCK_ATTEMPTS: u32 = 4;

/// MariaDB rolled this transaction back as a deadlock victim (1213, SQLSTATE 40001). Inserts
/// of new keys can deadlock on gap locks even when every writer goes in key order (first
/// messages into cold lists do this under load); the rolled-back work is safe to run again.
pub fn is_deadlock(e: &Error) -> bool {
    matches!(e, Error::Mysql(sqlx::Error::Database(d)) if d.code().as_deref() == Some("40001"))
}

/// Runs `f` again (after 1-8 ms, growing) while it fails as a deadlock victim, at most
/// [`DEADLOCK_ATTEMPTS`] times; any other outcome is returned as is.
pub async fn retry_deadlock<T, F, Fut>(what: &'static str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if attempt < DEADLOCK_ATTEMPTS && is_deadlock(&e) => {
                tracing::debug!(
                    what,
                    attempt,
                    "deadlock victim; running the transaction again"
                );
                tokio::time::sleep(Duration::from_millis(1 << (attempt - 1).min(3))).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// The insert failed on a unique key.
pub fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Appends ` IN (?, ?, …)` binding `ids` (which must not be empty).
pub fn push_in(qb: &mut QueryBuilder<MySql>, ids: impl IntoIterator<Item = i64>) {
    qb.push(" IN (");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(id);
    }
    qb.push(")");
}

/// Runs MySQL work under a deadline: a hung connection (a stalled server, a lock held by a stuck
/// client) fails the call with UNAVAILABLE instead of holding what the caller holds forever.
pub async fn deadline<T>(limit: Duration, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(Error::Timeout("mysql statement")))
}

/// A batcher of MySQL work on the shared pool: records its batch sizes under `name`, and fails
/// every item of a batch that passes `limit` (so a hung statement frees its batch slot).
pub fn batcher<T, R, F, Fut>(
    name: &'static str,
    pool: &MySqlPool,
    metrics: &Arc<Metrics>,
    limit: Duration,
    concurrency: usize,
    run: F,
) -> Batcher<T, Result<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(MySqlPool, Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<R>>> + Send + 'static,
{
    let (pool, metrics) = (pool.clone(), metrics.clone());
    Batcher::spawn(BATCH_MAX, concurrency, move |items| {
        metrics.batch(name, items.len());
        let n = items.len();
        let work = run(pool.clone(), items);
        async move {
            match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => (0..n)
                    .map(|_| Err(Error::Timeout("mysql statement")))
                    .collect(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn in_list_binds_one_placeholder_per_id() {
        let mut qb = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT 1 FROM t WHERE id");
        super::push_in(&mut qb, [1, 2, 3]);
        assert_eq!(qb.sql().as_str(), "SELECT 1 FROM t WHERE id IN (?, ?, ?)");
    }
}
