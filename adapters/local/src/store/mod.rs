//! The `Store` port on SQLite: the handle and the helpers every port's statements share;
//! the ports themselves are one file each (`accounts`, `catalog`, `subscriptions`, and
//! `records`, `deliveries` and `billing` beside this module).
//!
//! Each entity is one row holding its JSON (`doc`) plus the columns that keys, filters and
//! ordering need. Invariants:
//! - every tenant-owned statement filters on `tenant_id` as well as `id`, so another tenant's
//!   object reads, updates and deletes exactly like a missing one (`NotFound`);
//! - checks that guard a write (source exists, stored revision, no dependent rows) run inside
//!   the write's IMMEDIATE transaction, so nothing can slip in between check and write;
//! - lists are ordered by id (UUIDv7, so creation order) and the cursor is the last id seen.

use crate::db::{Db, sql_error};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::str::FromStr;
use wharf_core::domain::*;
use wharf_core::domain::{IdempotencyState, StoredResponse};
use wharf_core::ports::{
    AccountStore, ApiKeyStore, FeedStore, IDEMPOTENCY_KEPT, IDEMPOTENCY_RESERVATION_TIMEOUT,
    IdempotencyStore, ReferenceStore, Result, SourceStore, Store, SubscriptionStore,
};
use wharf_core::{
    ApiKeyId, CoreError, FeedId, Page, PageRequest, SourceId, SubscriptionId, TenantId, Timestamp,
    UserId, VendorId,
};

/// The SQLite implementation of every store port.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) db: Db,
}

impl SqliteStore {
    /// A tenant's object by id from `table` (one of this adapter's fixed table names); another
    /// tenant's object, like a missing one, is `NotFound(what)`.
    async fn get_in_tenant<T: DeserializeOwned + Send + 'static>(
        &self,
        table: &'static str,
        tenant: &TenantId,
        id: &str,
        what: &'static str,
    ) -> Result<T> {
        let sql = format!("SELECT doc FROM {table} WHERE tenant_id = ? AND id = ?");
        let (tenant, id) = (tenant.to_string(), id.to_owned());
        self.db
            .read(move |c| one(c, &sql, [tenant.as_str(), id.as_str()], what))
            .await
    }

    /// A store on an opened (and migrated) database.
    pub fn new(db: Db) -> Self {
        SqliteStore { db }
    }

    /// Reads one page of a list. `sql` selects the id first and must end with
    /// `id > ? ORDER BY id LIMIT ?`; `args` fill its earlier placeholders in order. `I` is the
    /// kind of id listed, so a cursor from another list is refused.
    pub(crate) async fn list<T, I>(
        &self,
        sql: &'static str,
        args: Vec<String>,
        page: &PageRequest,
        decode: fn(&Row<'_>) -> Result<T>,
    ) -> Result<Page<T>>
    where
        T: Send + 'static,
        I: FromStr,
    {
        let after = decode_cursor::<I>(page.cursor.as_deref())?;
        let limit = page.limit();
        let fetch = i64::try_from(limit + 1).map_err(CoreError::internal)?;
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(sql).map_err(sql_error)?;
                let mut bound: Vec<&dyn ToSql> = args.iter().map(|a| a as &dyn ToSql).collect();
                bound.push(&after);
                bound.push(&fetch);
                let mut rows = stmt.query(bound.as_slice()).map_err(sql_error)?;
                let mut items = Vec::with_capacity(limit + 1);
                while let Some(row) = rows.next().map_err(sql_error)? {
                    let id: String = row.get(0).map_err(sql_error)?;
                    items.push((id, decode(row)?));
                }
                Ok(paginate(items, limit))
            })
            .await
    }
}

/// Decodes a list row of the shape `SELECT id, doc …`.
pub(crate) fn decode_doc<T: DeserializeOwned>(row: &Row<'_>) -> Result<T> {
    from_doc(&row.get::<_, String>(1).map_err(sql_error)?)
}

fn paginate<T>(mut items: Vec<(String, T)>, limit: usize) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|(id, _)| URL_SAFE_NO_PAD.encode(id))
    } else {
        None
    };
    Page {
        items: items.into_iter().map(|(_, item)| item).collect(),
        next_cursor,
    }
}

/// The id after which the page starts; `""` sorts before every id.
fn decode_cursor<I: FromStr>(cursor: Option<&str>) -> Result<String> {
    let Some(cursor) = cursor else {
        return Ok(String::new());
    };
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| I::from_str(id).is_ok())
        .ok_or_else(|| CoreError::invalid("cursor", "is not a cursor from this API"))
}

pub(crate) fn to_doc<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(CoreError::internal)
}

pub(crate) fn from_doc<T: DeserializeOwned>(doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(CoreError::internal)
}

/// The serde name of a unit enum variant (`"published"`), so columns match the JSON.
fn label<T: Serialize>(value: &T) -> Result<String> {
    match serde_json::to_value(value).map_err(CoreError::internal)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(CoreError::internal(format!(
            "expected a string label, got {other}"
        ))),
    }
}

fn revision(r: u64) -> Result<i64> {
    i64::try_from(r).map_err(CoreError::internal)
}

/// A `LIKE` pattern matching `query` anywhere, with its wildcards taken literally.
fn contains_pattern(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for ch in query.to_lowercase().chars() {
        if matches!(ch, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

/// Reads the `doc` selected by `sql`, or `NotFound(what)`.
fn one<T: DeserializeOwned>(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    what: &'static str,
) -> Result<T> {
    let doc: Option<String> = c
        .prepare_cached(sql)
        .map_err(sql_error)?
        .query_row(args, |r| r.get(0))
        .optional()
        .map_err(sql_error)?;
    from_doc(&doc.ok_or(CoreError::NotFound(what))?)
}

pub(crate) fn exists(c: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<bool> {
    c.prepare_cached(sql)
        .map_err(sql_error)?
        .query_row(args, |r| r.get(0))
        .map_err(sql_error)
}

/// Runs a write statement and returns the number of rows it changed.
pub(crate) fn run(c: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<usize> {
    c.prepare_cached(sql)
        .map_err(sql_error)?
        .execute(args)
        .map_err(sql_error)
}

/// Inserts a new entity; a duplicate key becomes `Conflict("{what} already exists")`.
fn insert(c: &Connection, sql: &str, args: impl rusqlite::Params, what: &str) -> Result<()> {
    match run(c, sql, args) {
        Ok(_) => Ok(()),
        Err(CoreError::Conflict(_)) => Err(CoreError::Conflict(format!("{what} already exists"))),
        Err(e) => Err(e),
    }
}

/// Fails unless the stored revision (read by `sql`) is the one before `next`.
fn check_revision(
    tx: &Transaction,
    sql: &str,
    args: impl rusqlite::Params,
    next: u64,
    what: &'static str,
) -> Result<()> {
    let stored: Option<i64> = tx
        .prepare_cached(sql)
        .map_err(sql_error)?
        .query_row(args, |r| r.get(0))
        .optional()
        .map_err(sql_error)?;
    let stored = stored.ok_or(CoreError::NotFound(what))?;
    match next.checked_sub(1).map(revision).transpose()? {
        Some(expected) if expected == stored => Ok(()),
        _ => Err(CoreError::Conflict(format!(
            "the {what} was changed concurrently; retry"
        ))),
    }
}

fn put_secrets(tx: &Transaction, sub: &SubscriptionId, secrets: &[SigningSecret]) -> Result<()> {
    run(
        tx,
        "DELETE FROM signing_secrets WHERE subscription_id = ?",
        [sub.as_str()],
    )?;
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO signing_secrets (subscription_id, position, doc) VALUES (?, ?, ?)",
        )
        .map_err(sql_error)?;
    for (position, secret) in secrets.iter().enumerate() {
        let position = i64::try_from(position).map_err(CoreError::internal)?;
        stmt.execute(params![sub.as_str(), position, to_doc(secret)?])
            .map_err(sql_error)?;
    }
    Ok(())
}

fn source_in_tenant(c: &Connection, tenant: &VendorId, source: &SourceId) -> Result<()> {
    let found = exists(
        c,
        "SELECT EXISTS (SELECT 1 FROM sources WHERE tenant_id = ? AND id = ?)",
        [tenant.as_str(), source.as_str()],
    )?;
    if found {
        Ok(())
    } else {
        Err(CoreError::NotFound("source"))
    }
}

mod accounts;
mod catalog;
mod models;
mod subscriptions;

impl Store for SqliteStore {
    fn ping(&self) -> Result<()> {
        self.db.ping()
    }
}
