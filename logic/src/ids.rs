//! Message and group ids from `id_segment`: a process reserves `step` ids per MySQL update and
//! hands them out from memory.

use crate::db;
use crate::error::{Error, Result};
use sqlx::MySqlPool;
use std::time::Duration;

/// Ids reserved from one `id_segment` row, `step` at a time.
#[derive(Debug)]
pub struct Segment {
    name: &'static str,
    /// (last id handed out, last id reserved). Held across a refill: one refill at a time.
    state: tokio::sync::Mutex<(i64, i64)>,
    deadline: Duration,
}

impl Segment {
    pub fn new(name: &'static str, deadline: Duration) -> Self {
        Self {
            name,
            state: tokio::sync::Mutex::new((0, 0)),
            deadline,
        }
    }

    /// The next id, as its newtype (`MessageId`, `GroupId`).
    pub async fn next<T: From<i64>>(&self, pool: &MySqlPool) -> Result<T> {
        let mut st = self.state.lock().await;
        if st.0 >= st.1 {
            *st = db::deadline(self.deadline, self.reserve(pool)).await?;
        }
        st.0 += 1;
        Ok(T::from(st.0))
    }

    /// Reserves the next `step` ids: (last id handed out, last id reserved). The row is read
    /// and raised in one transaction, so a `step` changed meanwhile cannot shift the range onto
    /// ids another process holds.
    async fn reserve(&self, pool: &MySqlPool) -> Result<(i64, i64)> {
        let mut tx = pool.begin().await?;
        let row: Option<(i64, i32)> =
            sqlx::query_as("SELECT max_id, step FROM id_segment WHERE name = ? FOR UPDATE")
                .bind(self.name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((start, step)) = row else {
            return Err(Error::Internal(format!(
                "id_segment row {:?} missing: run `gim-logic migrate`",
                self.name
            )));
        };
        let end = start + i64::from(step.max(1));
        sqlx::query("UPDATE id_segment SET max_id = ? WHERE name = ?")
            .bind(end)
            .bind(self.name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((start, end))
    }
}
