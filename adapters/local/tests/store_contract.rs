//! The store and change-feed contracts, check by check, against SQLite (each check on a
//! database of its own), and that a data dir survives reopening and an older one is migrated.

use std::sync::Arc;
use wharf_core::domain::Counted;
use wharf_core::ports::{DeliveryStore, SourceStore, Store};
use wharf_core::{
    CoreError, DeliveryId, PageRequest, RecordId, SourceId, SubscriptionId, UserId, VendorId,
};
use wharf_local::db::MIGRATIONS;
use wharf_local::{Db, Durability, SqliteStore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A store on a database of its own, removed with it.
struct Fresh {
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Fresh {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

async fn fresh_store() -> Fresh {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = Db::open(&dir.path().join("wharf.db"), Durability::Normal).expect("open");
    Fresh {
        store: Arc::new(SqliteStore::new(db)),
        _dir: dir,
    }
}

/// The store and its change log: the same database.
async fn fresh() -> (Fresh, Arc<SqliteStore>) {
    let fresh = fresh_store().await;
    let log = fresh.store.clone();
    (fresh, log)
}

wharf_contract::store_contract!(fresh_store());

/// A batch larger than one write transaction (a tenant with hundreds of feeds makes tens of
/// thousands of outputs) is stored whole, in order, and counted once; appended again, it
/// stores nothing.
#[tokio::test]
async fn a_large_output_batch_is_stored_whole_and_once() {
    use wharf_core::domain::OutputRecord;
    use wharf_core::ports::RecordStore;
    let store = fresh_store().await;
    let (tenant, feed) = (VendorId::new(), wharf_core::FeedId::new());
    let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a time");
    let batch: Vec<OutputRecord> = (0..2_345)
        .map(|n| OutputRecord {
            id: RecordId::new(),
            tenant_id: tenant.clone(),
            feed_id: feed.clone(),
            pipeline_version: 1,
            ts: at,
            created_at: at,
            expires_at: at + time::Duration::days(3650),
            data: serde_json::json!({ "n": n }),
        })
        .collect();
    assert_eq!(
        store.append_output(&batch).await.expect("stored"),
        batch.len()
    );
    assert_eq!(store.append_output(&batch).await.expect("stored"), 0);
    let stored = store
        .output_after(&tenant, &feed, 0, 10_000)
        .await
        .expect("stored");
    assert!(
        stored.windows(2).all(|w| w[0].0 < w[1].0),
        "positions ascend"
    );
    let ids: Vec<_> = stored.into_iter().map(|(_, r)| r.id).collect();
    assert_eq!(ids, batch.into_iter().map(|r| r.id).collect::<Vec<_>>());
}
wharf_contract::change_log_contract!(fresh());

#[tokio::test]
async fn reopening_a_data_dir_keeps_its_data_and_does_not_migrate_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("data").join("wharf.db");
    let tenant = VendorId::new();
    let source = wharf_core::domain::Source {
        id: SourceId::new(),
        tenant_id: tenant.clone(),
        name: "ticks".into(),
        kind: wharf_core::domain::SourceKind::Push,
        url: None,
        queue_url: None,
        every: None,
        schema: None,
        retention_days: 30,
        last_polled_at: None,
        last_success_at: None,
        last_error: None,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        updated_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    {
        let db = Db::open(&path, Durability::Full)?;
        assert_eq!(db.schema_version()?, MIGRATIONS.len());
        SqliteStore::new(db).create_source(&source).await?;
    }

    // The migrations are plain CREATE statements: running them again would fail the open.
    let db = Db::open(&path, Durability::Normal)?;
    assert_eq!(db.schema_version()?, MIGRATIONS.len());
    let store = SqliteStore::new(db.clone());
    store.ping()?;
    assert_eq!(store.get_source(&tenant, &source.id).await?, source);
    let page = store.list_sources(&tenant, &PageRequest::first(10)).await?;
    assert_eq!((page.items, page.next_cursor), (vec![source], None));

    let second_handle = Db::open(&path, Durability::Normal)?;
    assert_eq!(second_handle.schema_version()?, MIGRATIONS.len());
    Ok(())
}

#[tokio::test]
async fn a_failed_write_rolls_back_everything_it_did() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = Db::open(&dir.path().join("wharf.db"), Durability::Normal)?;
    let result: Result<(), CoreError> = db
        .write(|tx| {
            tx.execute(
                "INSERT INTO reference_rows (tenant_id, table_name, key, value) VALUES ('t', 'x', 'k', '1')",
                [],
            )
            .map_err(wharf_local::db::sql_error)?;
            Err(CoreError::Conflict("changed my mind".into()))
        })
        .await;
    assert!(matches!(result, Err(CoreError::Conflict(m)) if m == "changed my mind"));
    let rows: i64 = db
        .read(|c| {
            c.query_row("SELECT count(*) FROM reference_rows", [], |r| r.get(0))
                .map_err(wharf_local::db::sql_error)
        })
        .await?;
    assert_eq!(rows, 0);
    Ok(())
}

#[tokio::test]
async fn a_unique_violation_is_a_conflict_and_readers_cannot_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = Db::open(&dir.path().join("wharf.db"), Durability::Normal)?;
    let insert_user = |db: Db, id: &'static str| async move {
        db.write(move |tx| {
            tx.execute(
                "INSERT INTO users (id, email, password_hash, roles, tenant_id, created_at)
                 VALUES (?, 'a@example.com', 'h', '[\"subscriber\"]', NULL, '2026-01-01T00:00:00Z')",
                [id],
            )
            .map_err(wharf_local::db::sql_error)
        })
        .await
    };
    assert_eq!(insert_user(db.clone(), "usr_1").await?, 1);
    match insert_user(db.clone(), "usr_2").await {
        Err(CoreError::Conflict(m)) => assert!(m.contains("users.email"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let write_on_reader = db
        .read(|c| {
            c.execute("DELETE FROM users", [])
                .map_err(wharf_local::db::sql_error)
        })
        .await;
    assert!(
        matches!(write_on_reader, Err(CoreError::Internal(_))),
        "{write_on_reader:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_user_takes_its_refresh_tokens_along() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = Db::open(&dir.path().join("wharf.db"), Durability::Normal)?;
    let remaining: i64 = db
        .write(|tx| {
            tx.execute_batch(
                "INSERT INTO users (id, email, password_hash, roles, tenant_id, created_at)
                 VALUES ('usr_1', 'a@example.com', 'h', '[]', NULL, '2026-01-01T00:00:00Z');
                 INSERT INTO refresh_tokens (digest, user_id, expires_at) VALUES ('d', 'usr_1', 1);
                 DELETE FROM users WHERE id = 'usr_1';",
            )
            .map_err(wharf_local::db::sql_error)?;
            tx.query_row("SELECT count(*) FROM refresh_tokens", [], |r| r.get(0))
                .map_err(wharf_local::db::sql_error)
        })
        .await?;
    assert_eq!(remaining, 0);
    Ok(())
}

#[tokio::test]
async fn subscriptions_from_before_the_pipeline_migration_start_at_position_zero() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wharf.db");
    let (tenant, sub) = (VendorId::new(), SubscriptionId::new());
    {
        // A data dir as the first release left it: only 0001 applied, one subscription.
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(MIGRATIONS[0])?;
        conn.execute(
            "INSERT INTO sources (id, tenant_id, doc) VALUES ('src_1', ?1, '{}');",
            [tenant.as_str()],
        )?;
        conn.execute(
            "INSERT INTO feeds (id, tenant_id, source_id, status, visibility, name_folded,
                                description_folded, revision, doc)
             VALUES ('feed_1', ?1, 'src_1', 'published', 'public', 'f', 'd', 1, '{}')",
            [tenant.as_str()],
        )?;
        conn.execute(
            "INSERT INTO subscriptions (id, tenant_id, feed_id, subscriber_id, revision, doc)
             VALUES (?1, ?2, 'feed_1', ?3, 1, '{}')",
            [sub.as_str(), tenant.as_str(), UserId::new().as_str()],
        )?;
        conn.pragma_update(None, "user_version", 1)?;
    }
    let db = Db::open(&path, Durability::Normal)?;
    assert_eq!(db.schema_version()?, MIGRATIONS.len());
    let store = SqliteStore::new(db);
    assert_eq!(store.delivery_position(&tenant, &sub).await?, 0);
    let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::hours(3);
    store
        .advance(&tenant, &sub, 0, 4, Counted::usage(4), at, &[])
        .await?;
    assert_eq!(store.delivery_position(&tenant, &sub).await?, 4);
    Ok(())
}

#[tokio::test]
async fn pending_deliveries_parked_before_positions_are_read_back_by_position() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wharf.db");
    let tenant = VendorId::new();
    let ids = [RecordId::new(), RecordId::new(), RecordId::new()];
    let (r1, r2, gone) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    let (delivery, sub) = (DeliveryId::new(), SubscriptionId::new());
    {
        // A data dir of the release before 0007: a pending delivery names its records by id.
        let conn = rusqlite::Connection::open(&path)?;
        for migration in &MIGRATIONS[..6] {
            conn.execute_batch(migration)?;
        }
        for (id, n) in [(r2, 2), (r1, 1)] {
            conn.execute(
                "INSERT INTO output_records (position, id, tenant_id, feed_id, pipeline_version,
                                             ts, created_at, expires_at, data)
                 VALUES (?1 + 40, ?2, ?3, 'feed_1', 1, 0, 0, 9999999999999999, '{}')",
                rusqlite::params![n, id, tenant.as_str()],
            )?;
        }
        let doc = serde_json::json!({
            "id": delivery.as_str(), "tenant_id": tenant.as_str(), "subscription_id": sub.as_str(),
            "record_ids": [r1, gone, r2], "attempts": 2,
            "next_attempt_at": "1970-01-01T00:00:00Z", "first_failed_at": "1970-01-01T00:00:00Z",
            "replay": false
        });
        conn.execute(
            "INSERT INTO pending_deliveries (id, tenant_id, subscription_id, next_attempt_at, doc)
             VALUES (?1, ?2, ?3, 0, ?4)",
            rusqlite::params![
                delivery.as_str(),
                tenant.as_str(),
                sub.as_str(),
                doc.to_string()
            ],
        )?;
        conn.pragma_update(None, "user_version", 6)?;
    }
    let db = Db::open(&path, Durability::Normal)?;
    assert_eq!(db.schema_version()?, MIGRATIONS.len());
    let store = SqliteStore::new(db);
    let due = store
        .due_deliveries(time::OffsetDateTime::now_utc(), 10)
        .await?;
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].positions,
        vec![41, 42],
        "in the order of the record ids"
    );
    assert_eq!(due[0].attempts, 2);
    Ok(())
}
