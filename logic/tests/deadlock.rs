//! A transaction MariaDB rolls back as a deadlock victim runs again instead of failing the send
//! (first messages into cold lists deadlocked on seq_block gap locks under B4's first run).

use gim_logic::Error;
use gim_logic::db::{is_deadlock, retry_deadlock};
use sqlx::MySqlPool;
use sqlx::mysql::MySqlPoolOptions;
use std::sync::atomic::{AtomicU32, Ordering};

async fn pool() -> MySqlPool {
    let pool = MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&gim_test_support::mysql_url())
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS deadlock_probe (id INT PRIMARY KEY, v INT NOT NULL);
         INSERT IGNORE INTO deadlock_probe VALUES (1, 0), (2, 0);",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// Two transactions that lock rows 1 and 2 in opposite orders: MariaDB rolls one back (1213).
/// Returns the victim's error.
async fn deadlock(pool: &MySqlPool) -> Result<(), Error> {
    let mut a = pool.begin().await?;
    let mut b = pool.begin().await?;
    let bump = "UPDATE deadlock_probe SET v = v + 1 WHERE id = ";
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{bump}1")))
        .execute(&mut *a)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{bump}2")))
        .execute(&mut *b)
        .await?;
    let (ra, rb) = tokio::join!(
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{bump}2"))).execute(&mut *a),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{bump}1")))
                .execute(&mut *b)
                .await
        }
    );
    let _ = a.rollback().await;
    let _ = b.rollback().await;
    ra.and(rb).map(|_| ()).map_err(Error::from)
}

#[tokio::test]
async fn a_deadlock_victim_runs_again_and_other_errors_do_not() {
    let pool = pool().await;
    let e = deadlock(&pool).await.expect_err("one side is the victim");
    assert!(is_deadlock(&e), "{e:?}");

    let attempts = AtomicU32::new(0);
    let r = retry_deadlock("probe", || {
        let first = attempts.fetch_add(1, Ordering::Relaxed) == 0;
        let pool = &pool;
        async move { if first { deadlock(pool).await } else { Ok(()) } }
    })
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(attempts.load(Ordering::Relaxed), 2);

    // Anything else is not retried.
    let attempts = AtomicU32::new(0);
    let r: Result<(), Error> = retry_deadlock("probe", || {
        attempts.fetch_add(1, Ordering::Relaxed);
        let pool = &pool;
        async move {
            sqlx::raw_sql("SELECT * FROM no_such_table")
                .execute(pool)
                .await?;
            Ok(())
        }
    })
    .await;
    assert!(r.is_err());
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
}
