//! Reading and writing SQLite columns: times as unix microseconds, positions and counts as
//! integers, ids and JSON as text, and running a query into decoded rows.

use crate::db::sql_error;
use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};
use serde::de::DeserializeOwned;
use wharf_core::ports::Result;
use wharf_core::{CoreError, Timestamp};

/// Unix microseconds of `t`, rounded down.
pub(crate) fn micros(t: Timestamp) -> Result<i64> {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).map_err(CoreError::internal)
}

/// The instant `m` unix microseconds after the epoch.
pub(crate) fn from_micros(m: i64) -> Result<Timestamp> {
    Timestamp::from_unix_timestamp_nanos(i128::from(m) * 1_000).map_err(CoreError::internal)
}

/// A caller's position or limit as an SQL bound. Nothing is stored past `i64::MAX`, so
/// clamping a larger value keeps its meaning ("after everything", "no limit").
pub(crate) fn bound<N: TryInto<i64>>(n: N) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// A position to store; unlike a bound, one that SQLite cannot hold is an error.
pub(crate) fn stored_position(p: u64) -> Result<i64> {
    i64::try_from(p).map_err(CoreError::internal)
}

/// A stored position or count, which is never negative.
pub(crate) fn unsigned(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(CoreError::internal)
}

pub(crate) fn column<T: FromSql>(row: &Row<'_>, i: usize) -> Result<T> {
    row.get(i).map_err(sql_error)
}

/// A typed id column.
pub(crate) fn id_column<I>(row: &Row<'_>, i: usize) -> Result<I>
where
    I: TryFrom<String>,
    I::Error: std::error::Error + Send + Sync + 'static,
{
    I::try_from(column::<String>(row, i)?).map_err(CoreError::internal)
}

pub(crate) fn time_column(row: &Row<'_>, i: usize) -> Result<Timestamp> {
    from_micros(column(row, i)?)
}

/// A JSON text column, parsed without copying the text first.
pub(crate) fn json_column<T: DeserializeOwned>(row: &Row<'_>, i: usize) -> Result<T> {
    let text = row
        .get_ref(i)
        .map_err(sql_error)?
        .as_str()
        .map_err(CoreError::internal)?;
    serde_json::from_str(text).map_err(CoreError::internal)
}

/// Runs a query and decodes every row.
pub(crate) fn collect<T>(
    c: &Connection,
    sql: &str,
    args: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql).map_err(sql_error)?;
    let mut rows = stmt.query(args).map_err(sql_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        out.push(decode(row)?);
    }
    Ok(out)
}
