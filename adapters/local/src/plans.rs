//! The statements run for every batch of records are answered from the rows they name: a
//! plan that scans a whole table or index is cheap on a test's small database and costs
//! more with every record stored, so it is caught here rather than by a slow server.

use crate::db::{Db, Durability};
use crate::records::{RAW_AFTER, RAW_OF_TENANT_AFTER, TENANTS_AFTER};
use rusqlite::Connection;

/// The plan's steps as SQLite words them (`SEARCH …`, `SCAN …`, `USE TEMP B-TREE …`).
fn plan(conn: &Connection, sql: &str, parameters: usize) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("the statement prepares");
    let nulls = vec![rusqlite::types::Null; parameters];
    stmt.query_map(rusqlite::params_from_iter(nulls), |row| {
        row.get::<_, String>(3)
    })
    .expect("plan")
    .collect::<Result<_, _>>()
    .expect("plan rows")
}

#[tokio::test]
async fn the_change_log_reads_search_from_a_position_and_never_scan() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(&dir.path().join("wharf.db"), Durability::Normal).expect("open");
    let plans = db
        .read(|conn| {
            Ok([
                ("raw_after", plan(conn, RAW_AFTER, 2)),
                ("raw_of_tenant_after", plan(conn, RAW_OF_TENANT_AFTER, 3)),
                ("tenants_after", plan(conn, TENANTS_AFTER, 1)),
            ])
        })
        .await
        .expect("read");
    for (name, steps) in plans {
        assert!(
            steps.iter().any(|s| s.starts_with("SEARCH raw_records"))
                && !steps.iter().any(|s| s.starts_with("SCAN")),
            "{name} reads {steps:?}"
        );
    }
}
