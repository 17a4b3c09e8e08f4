//! Batch statements whose every value is an integer, sent with the values as literals.
//!
//! A batch statement has a new shape for each batch size, so it can never be a cached prepared
//! statement: with bound parameters every batch costs a prepare, an execute and a close (two
//! round trips, and MariaDB parses it at the prepare). As text it is one round trip
//! (`COM_QUERY`). An `i64` written in decimal cannot change what a statement means, so only
//! integers go in this way; strings and bytes stay bound parameters.

use sqlx::MySqlPool;
use std::fmt::Write as _;

/// Appends `items` to `sql`, each written by `item`, separated by `sep`.
pub(crate) fn join<T>(
    sql: &mut String,
    items: &[T],
    sep: &str,
    mut item: impl FnMut(&mut String, &T),
) {
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            sql.push_str(sep);
        }
        item(sql, t);
    }
}

/// Appends `v1, v2, ...`.
pub(crate) fn ints(sql: &mut String, values: impl IntoIterator<Item = i64>) {
    for (i, v) in values.into_iter().enumerate() {
        let _ = write!(sql, "{}{v}", if i > 0 { ", " } else { "" });
    }
}

/// Runs a query whose result columns are all integers: each row as `N` values.
pub(crate) async fn rows<const N: usize>(
    pool: &MySqlPool,
    sql: String,
) -> Result<Vec<[i64; N]>, sqlx::Error> {
    use sqlx::Row as _;
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let mut out = [0i64; N];
            for (i, v) in out.iter_mut().enumerate() {
                *v = r.try_get(i)?;
            }
            Ok(out)
        })
        .collect()
}

/// Runs a statement; the number of rows it changed.
pub(crate) async fn execute(pool: &MySqlPool, sql: String) -> Result<u64, sqlx::Error> {
    Ok(sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ints_and_join_write_plain_decimal_lists() {
        let mut s = String::from("IN (");
        super::ints(&mut s, [1, -2, i64::MAX]);
        s.push(')');
        assert_eq!(s, format!("IN (1, -2, {})", i64::MAX));
        let mut s = String::new();
        super::join(&mut s, &[(1, 2), (3, 4)], " OR ", |s, (a, b)| {
            s.push_str(&format!("(a = {a} AND b = {b})"))
        });
        assert_eq!(s, "(a = 1 AND b = 2) OR (a = 3 AND b = 4)");
    }
}
