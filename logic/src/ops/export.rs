//! `gim-logic app export`: every row of one app, as JSON lines, from one consistent snapshot.
//!
//! Tables are found in the schema, not listed here: every table with an `app_id` column is
//! exported, so a table a later migration adds is never silently left out. Each line is
//! `{"table": NAME, "row": {COLUMN: VALUE, ...}}`; binary columns (message bodies, the app's
//! public key) are hex strings, times are MariaDB's text form. MariaDB builds each row's JSON
//! (`JSON_OBJECT`), which quotes and escapes every value itself.

use futures::TryStreamExt;
use gim_common::AppId;
use sqlx::{MySqlPool, Row};
use std::io::Write;

/// Rows written per table, in the order written.
pub type Counts = Vec<(String, u64)>;

/// A column as the schema describes it.
struct Column {
    name: String,
    binary: bool,
}

/// Writes every row of `app` to `out`. Reads run in one `READ ONLY` transaction with a
/// consistent snapshot, so the export is one point in time even while messages are sent.
/// Unknown app: an error, nothing written.
pub async fn export_app(
    pool: &MySqlPool,
    app: AppId,
    out: &mut impl Write,
) -> anyhow::Result<Counts> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *conn)
        .await?;
    sqlx::raw_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .execute(&mut *conn)
        .await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT app_id FROM app WHERE app_id = ?")
        .bind(app.0)
        .fetch_optional(&mut *conn)
        .await?;
    anyhow::ensure!(exists.is_some(), "no app with id {app}");
    let mut counts = Counts::new();
    for (table, cols) in app_tables(&mut conn).await? {
        let sql = format!(
            "SELECT JSON_OBJECT({}) FROM {} WHERE app_id = ?",
            json_args(&cols),
            ident(&table)
        );
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(app.0)
            .fetch(&mut *conn);
        let mut n = 0u64;
        let table_json = serde_json::to_string(&table)?;
        while let Some(row) = rows.try_next().await? {
            let obj: String = row.try_get(0)?;
            writeln!(out, "{{\"table\":{table_json},\"row\":{obj}}}")?;
            n += 1;
        }
        counts.push((table, n));
    }
    out.flush()?;
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
    Ok(counts)
}

/// Tables of the current database with an `app_id` column, with their columns in order.
async fn app_tables(
    conn: &mut sqlx::MySqlConnection,
) -> anyhow::Result<Vec<(String, Vec<Column>)>> {
    let rows = sqlx::query(
        "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE FROM information_schema.COLUMNS c \
         WHERE c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME IN ( \
           SELECT TABLE_NAME FROM information_schema.COLUMNS \
           WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME = 'app_id') \
         ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut tables: Vec<(String, Vec<Column>)> = Vec::new();
    for r in rows {
        // information_schema's columns are utf8 text, but MariaDB marks some as binary.
        let table = text(&r, 0)?;
        let name = text(&r, 1)?;
        let kind = text(&r, 2)?.to_ascii_lowercase();
        let col = Column {
            name,
            binary: kind.contains("binary") || kind.contains("blob"),
        };
        match tables.last_mut() {
            Some((t, cols)) if *t == table => cols.push(col),
            _ => tables.push((table, vec![col])),
        }
    }
    Ok(tables)
}

fn text(r: &sqlx::mysql::MySqlRow, i: usize) -> anyhow::Result<String> {
    match r.try_get::<String, _>(i) {
        Ok(s) => Ok(s),
        Err(_) => Ok(String::from_utf8(r.try_get::<Vec<u8>, _>(i)?)?),
    }
}

/// `'name', col, 'body', HEX(body), ...` for `JSON_OBJECT`.
fn json_args(cols: &[Column]) -> String {
    cols.iter()
        .map(|c| {
            let key = c.name.replace('\'', "''");
            if c.binary {
                format!("'{key}', HEX({})", ident(&c.name))
            } else {
                format!("'{key}', {}", ident(&c.name))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A quoted identifier (names come from the schema; a backtick in one is doubled).
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_columns_are_hex_and_names_are_quoted() {
        let cols = vec![
            Column {
                name: "seq".into(),
                binary: false,
            },
            Column {
                name: "body".into(),
                binary: true,
            },
            Column {
                name: "we`ird".into(),
                binary: false,
            },
        ];
        assert_eq!(
            json_args(&cols),
            "'seq', `seq`, 'body', HEX(`body`), 'we`ird', `we``ird`"
        );
    }
}
