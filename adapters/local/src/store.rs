//! The `Store` port on SQLite.
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
    AccountStore, ApiKeyStore, FeedStore, IDEMPOTENCY_RESERVATION_TIMEOUT, IdempotencyStore,
    ReferenceStore, Result, SourceStore, Store, SubscriptionStore,
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

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_vendor(&self, vendor: &Vendor) -> Result<()> {
        let (id, status, doc) = (
            vendor.id.to_string(),
            label(&vendor.status)?,
            to_doc(vendor)?,
        );
        self.db
            .write(move |tx| {
                insert(
                    tx,
                    "INSERT INTO vendors (id, status, doc) VALUES (?, ?, ?)",
                    [&id, &status, &doc],
                    "vendor",
                )
            })
            .await
    }

    async fn get_vendor(&self, id: &VendorId) -> Result<Vendor> {
        let id = id.clone();
        self.db
            .read(move |c| {
                one(
                    c,
                    "SELECT doc FROM vendors WHERE id = ?",
                    [id.as_str()],
                    "vendor",
                )
            })
            .await
    }

    async fn set_vendor_status(
        &self,
        id: &VendorId,
        from: VendorStatus,
        to: VendorStatus,
    ) -> Result<Vendor> {
        let id = id.clone();
        self.db
            .write(move |tx| {
                let mut vendor: Vendor = one(
                    tx,
                    "SELECT doc FROM vendors WHERE id = ?",
                    [id.as_str()],
                    "vendor",
                )?;
                if vendor.status != from {
                    return Err(CoreError::Conflict(format!(
                        "the vendor is {}, not {}",
                        label(&vendor.status)?,
                        label(&from)?
                    )));
                }
                vendor.status = to;
                run(
                    tx,
                    "UPDATE vendors SET status = ?, doc = ? WHERE id = ?",
                    [&label(&to)?, &to_doc(&vendor)?, id.as_str()],
                )?;
                Ok(vendor)
            })
            .await
    }

    async fn list_vendors(
        &self,
        status: Option<VendorStatus>,
        page: &PageRequest,
    ) -> Result<Page<Vendor>> {
        match status {
            Some(status) => {
                self.list::<_, VendorId>(
                    "SELECT id, doc FROM vendors WHERE status = ? AND id > ? ORDER BY id LIMIT ?",
                    vec![label(&status)?],
                    page,
                    decode_doc,
                )
                .await
            }
            None => {
                self.list::<_, VendorId>(
                    "SELECT id, doc FROM vendors WHERE id > ? ORDER BY id LIMIT ?",
                    vec![],
                    page,
                    decode_doc,
                )
                .await
            }
        }
    }

    async fn delete_vendor(&self, id: &VendorId) -> Result<()> {
        let id = id.clone();
        self.db
            .write(move |tx| {
                let found = exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM vendors WHERE id = ?)",
                    [id.as_str()],
                )?;
                if !found {
                    return Err(CoreError::NotFound("vendor"));
                }
                // Only an empty tenant may go: anything it owns would be orphaned.
                let owns_something = exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM sources WHERE tenant_id = ?1)
                         OR EXISTS (SELECT 1 FROM feeds WHERE tenant_id = ?1)
                         OR EXISTS (SELECT 1 FROM subscriptions WHERE tenant_id = ?1)
                         OR EXISTS (SELECT 1 FROM api_keys WHERE tenant_id = ?1)
                         OR EXISTS (SELECT 1 FROM reference_rows WHERE tenant_id = ?1)",
                    [id.as_str()],
                )?;
                if owns_something {
                    return Err(CoreError::Conflict(
                        "the vendor still owns sources, feeds, keys or subscriptions".into(),
                    ));
                }
                run(tx, "DELETE FROM vendors WHERE id = ?", [id.as_str()])?;
                Ok(())
            })
            .await
    }

    async fn create_subscriber(&self, subscriber: &Subscriber) -> Result<()> {
        let (id, doc) = (subscriber.id.to_string(), to_doc(subscriber)?);
        self.db
            .write(move |tx| {
                insert(
                    tx,
                    "INSERT INTO subscribers (id, doc) VALUES (?, ?)",
                    [&id, &doc],
                    "subscriber",
                )
            })
            .await
    }

    async fn get_subscriber(&self, id: &UserId) -> Result<Subscriber> {
        let id = id.clone();
        self.db
            .read(move |c| {
                one(
                    c,
                    "SELECT doc FROM subscribers WHERE id = ?",
                    [id.as_str()],
                    "subscriber",
                )
            })
            .await
    }
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn create_api_key(&self, key: &ApiKey, secret_digest: &str) -> Result<()> {
        let args = [
            key.id.to_string(),
            key.tenant_id.to_string(),
            secret_digest.to_owned(),
            to_doc(key)?,
        ];
        self.db
            .write(move |tx| {
                insert(
                    tx,
                    "INSERT INTO api_keys (id, tenant_id, secret_digest, doc) VALUES (?, ?, ?, ?)",
                    args,
                    "api key",
                )
            })
            .await
    }

    async fn get_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<ApiKey> {
        self.get_in_tenant("api_keys", tenant, id.as_str(), "api key")
            .await
    }

    async fn list_api_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        self.list::<_, ApiKeyId>(
            "SELECT id, doc FROM api_keys WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
            vec![tenant.to_string()],
            page,
            decode_doc,
        )
        .await
    }

    async fn delete_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.db
            .write(move |tx| {
                match run(
                    tx,
                    "DELETE FROM api_keys WHERE tenant_id = ? AND id = ?",
                    [tenant.as_str(), id.as_str()],
                )? {
                    0 => Err(CoreError::NotFound("api key")),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn find_api_key(&self, id: &ApiKeyId) -> Result<(ApiKey, String)> {
        let id = id.clone();
        self.db
            .read(move |c| {
                let row: Option<(String, String)> = c
                    .prepare_cached("SELECT doc, secret_digest FROM api_keys WHERE id = ?")
                    .map_err(sql_error)?
                    .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(sql_error)?;
                let (doc, digest) = row.ok_or(CoreError::NotFound("api key"))?;
                Ok((from_doc(&doc)?, digest))
            })
            .await
    }
}

#[async_trait]
impl SourceStore for SqliteStore {
    async fn create_source(&self, source: &Source) -> Result<()> {
        let args = [
            source.id.to_string(),
            source.tenant_id.to_string(),
            to_doc(source)?,
        ];
        self.db
            .write(move |tx| {
                insert(
                    tx,
                    "INSERT INTO sources (id, tenant_id, doc) VALUES (?, ?, ?)",
                    args,
                    "source",
                )
            })
            .await
    }

    async fn get_source(&self, tenant: &TenantId, id: &SourceId) -> Result<Source> {
        self.get_in_tenant("sources", tenant, id.as_str(), "source")
            .await
    }

    async fn list_sources(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Source>> {
        self.list::<_, SourceId>(
            "SELECT id, doc FROM sources WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
            vec![tenant.to_string()],
            page,
            decode_doc,
        )
        .await
    }

    async fn update_source(&self, source: &Source) -> Result<()> {
        let args = [
            to_doc(source)?,
            source.tenant_id.to_string(),
            source.id.to_string(),
        ];
        self.db
            .write(move |tx| {
                match run(
                    tx,
                    "UPDATE sources SET doc = ? WHERE tenant_id = ? AND id = ?",
                    args,
                )? {
                    0 => Err(CoreError::NotFound("source")),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn list_poll_sources(&self, page: &PageRequest) -> Result<Page<Source>> {
        self.list::<_, SourceId>(
            "SELECT id, doc FROM sources WHERE json_extract(doc, '$.kind') = 'http_poll'
               AND id > ? ORDER BY id LIMIT ?",
            Vec::<String>::new(),
            page,
            decode_doc,
        )
        .await
    }

    async fn delete_source(&self, tenant: &TenantId, id: &SourceId) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.db
            .write(move |tx| {
                source_in_tenant(tx, &tenant, &id)?;
                let used = exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM feeds WHERE tenant_id = ? AND source_id = ?)",
                    [tenant.as_str(), id.as_str()],
                )?;
                if used {
                    return Err(CoreError::Conflict(
                        "the source is used by a feed; delete the feed first".into(),
                    ));
                }
                run(
                    tx,
                    "DELETE FROM sources WHERE tenant_id = ? AND id = ?",
                    [tenant.as_str(), id.as_str()],
                )?;
                Ok(())
            })
            .await
    }
}

/// A feed's row, computed once outside the transaction.
struct FeedRow {
    id: String,
    tenant_id: VendorId,
    source_id: SourceId,
    status: String,
    visibility: String,
    name_folded: String,
    description_folded: String,
    revision: i64,
    doc: String,
}

impl FeedRow {
    fn of(feed: &Feed) -> Result<FeedRow> {
        Ok(FeedRow {
            id: feed.id.to_string(),
            tenant_id: feed.tenant_id.clone(),
            source_id: feed.source_id.clone(),
            status: label(&feed.status)?,
            visibility: label(&feed.visibility)?,
            name_folded: feed.name.to_lowercase(),
            description_folded: feed.description.to_lowercase(),
            revision: revision(feed.revision)?,
            doc: to_doc(feed)?,
        })
    }
}

fn decode_catalog_entry(row: &Row<'_>) -> Result<CatalogEntry> {
    let text = |i: usize| row.get::<_, String>(i).map_err(sql_error);
    let feed: Feed = from_doc(&text(1)?)?;
    let vendor: Vendor = from_doc(&text(2)?)?;
    let source: Source = from_doc(&text(3)?)?;
    Ok(CatalogEntry {
        feed_id: feed.id,
        vendor_id: vendor.id,
        vendor_name: vendor.name,
        name: feed.name,
        description: feed.description,
        plans: feed.plans,
        schema: source.schema,
        sample: feed.sample,
    })
}

#[async_trait]
impl FeedStore for SqliteStore {
    async fn create_feed(&self, feed: &Feed) -> Result<()> {
        let row = FeedRow::of(feed)?;
        self.db
            .write(move |tx| {
                source_in_tenant(tx, &row.tenant_id, &row.source_id)?;
                insert(
                    tx,
                    "INSERT INTO feeds (id, tenant_id, source_id, status, visibility, name_folded,
                                        description_folded, revision, doc)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    params![
                        row.id,
                        row.tenant_id.as_str(),
                        row.source_id.as_str(),
                        row.status,
                        row.visibility,
                        row.name_folded,
                        row.description_folded,
                        row.revision,
                        row.doc
                    ],
                    "feed",
                )
            })
            .await
    }

    async fn get_feed(&self, tenant: &TenantId, id: &FeedId) -> Result<Feed> {
        self.get_in_tenant("feeds", tenant, id.as_str(), "feed")
            .await
    }

    async fn list_feeds(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Feed>> {
        self.list::<_, FeedId>(
            "SELECT id, doc FROM feeds WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
            vec![tenant.to_string()],
            page,
            decode_doc,
        )
        .await
    }

    async fn update_feed(&self, feed: &Feed) -> Result<()> {
        let row = FeedRow::of(feed)?;
        let next = feed.revision;
        self.db
            .write(move |tx| {
                check_revision(
                    tx,
                    "SELECT revision FROM feeds WHERE tenant_id = ? AND id = ?",
                    [row.tenant_id.as_str(), &row.id],
                    next,
                    "feed",
                )?;
                source_in_tenant(tx, &row.tenant_id, &row.source_id)?;
                run(
                    tx,
                    "UPDATE feeds SET source_id = ?, status = ?, visibility = ?, name_folded = ?,
                                      description_folded = ?, revision = ?, doc = ?
                     WHERE tenant_id = ? AND id = ?",
                    params![
                        row.source_id.as_str(),
                        row.status,
                        row.visibility,
                        row.name_folded,
                        row.description_folded,
                        row.revision,
                        row.doc,
                        row.tenant_id.as_str(),
                        row.id
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn delete_feed(&self, tenant: &TenantId, id: &FeedId) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.db
            .write(move |tx| {
                let found = exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM feeds WHERE tenant_id = ? AND id = ?)",
                    [tenant.as_str(), id.as_str()],
                )?;
                if !found {
                    return Err(CoreError::NotFound("feed"));
                }
                let subscribed = exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE tenant_id = ? AND feed_id = ?)",
                    [tenant.as_str(), id.as_str()],
                )?;
                if subscribed {
                    return Err(CoreError::Conflict(
                        "the feed has subscriptions; archive it instead".into(),
                    ));
                }
                run(
                    tx,
                    "DELETE FROM feeds WHERE tenant_id = ? AND id = ?",
                    [tenant.as_str(), id.as_str()],
                )?;
                Ok(())
            })
            .await
    }

    async fn locate_feed(&self, id: &FeedId) -> Result<Feed> {
        let id = id.clone();
        self.db
            .read(move |c| {
                one(
                    c,
                    "SELECT doc FROM feeds WHERE id = ?",
                    [id.as_str()],
                    "feed",
                )
            })
            .await
    }

    async fn list_windowed_feeds(&self, page: &PageRequest) -> Result<Page<Feed>> {
        self.list::<_, FeedId>(
            "SELECT id, doc FROM feeds WHERE status = 'published'
               AND EXISTS (SELECT 1 FROM json_each(doc, '$.pipeline.rules')
                           WHERE json_extract(value, '$.type') = 'window')
               AND id > ? ORDER BY id LIMIT ?",
            Vec::<String>::new(),
            page,
            decode_doc,
        )
        .await
    }

    async fn list_catalog(
        &self,
        query: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<CatalogEntry>> {
        let pattern = contains_pattern(query.unwrap_or_default());
        self.list::<_, FeedId>(
            "SELECT f.id, f.doc, v.doc, s.doc
             FROM feeds f
             JOIN vendors v ON v.id = f.tenant_id
             JOIN sources s ON s.id = f.source_id AND s.tenant_id = f.tenant_id
             WHERE f.status = ? AND f.visibility = ? AND v.status = ?
               AND (f.name_folded LIKE ? ESCAPE '\\' OR f.description_folded LIKE ? ESCAPE '\\')
               AND f.id > ?
             ORDER BY f.id
             LIMIT ?",
            vec![
                label(&FeedStatus::Published)?,
                label(&Visibility::Public)?,
                label(&VendorStatus::Active)?,
                pattern.clone(),
                pattern,
            ],
            page,
            decode_catalog_entry,
        )
        .await
    }
}

#[async_trait]
impl ReferenceStore for SqliteStore {
    async fn put_reference(
        &self,
        tenant: &TenantId,
        table: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<bool> {
        let args = [
            tenant.to_string(),
            table.to_owned(),
            key.to_owned(),
            to_doc(value)?,
        ];
        self.db
            .write(move |tx| {
                let existed = exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM reference_rows
                                    WHERE tenant_id = ? AND table_name = ? AND key = ?)",
                    [&args[0], &args[1], &args[2]],
                )?;
                run(
                    tx,
                    "INSERT INTO reference_rows (tenant_id, table_name, key, value)
                     VALUES (?, ?, ?, ?)
                     ON CONFLICT (tenant_id, table_name, key) DO UPDATE SET value = excluded.value",
                    args,
                )?;
                Ok(!existed)
            })
            .await
    }

    async fn get_reference(
        &self,
        tenant: &TenantId,
        table: &str,
        key: &str,
    ) -> Result<serde_json::Value> {
        let args = [tenant.to_string(), table.to_owned(), key.to_owned()];
        self.db
            .read(move |c| {
                one(
                    c,
                    "SELECT value FROM reference_rows
                     WHERE tenant_id = ? AND table_name = ? AND key = ?",
                    args,
                    "reference row",
                )
            })
            .await
    }
}

/// A subscription's row, computed once outside the transaction.
struct SubscriptionRow {
    id: SubscriptionId,
    tenant_id: VendorId,
    feed_id: FeedId,
    subscriber_id: String,
    revision: i64,
    doc: String,
}

impl SubscriptionRow {
    fn of(sub: &Subscription) -> Result<SubscriptionRow> {
        Ok(SubscriptionRow {
            id: sub.id.clone(),
            tenant_id: sub.tenant_id.clone(),
            feed_id: sub.feed_id.clone(),
            subscriber_id: sub.subscriber_id.to_string(),
            revision: revision(sub.revision)?,
            doc: to_doc(sub)?,
        })
    }
}

fn subscription_in_tenant(c: &Connection, tenant: &VendorId, id: &SubscriptionId) -> Result<()> {
    let found = exists(
        c,
        "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE tenant_id = ? AND id = ?)",
        [tenant.as_str(), id.as_str()],
    )?;
    if found {
        Ok(())
    } else {
        Err(CoreError::NotFound("subscription"))
    }
}

#[async_trait]
impl SubscriptionStore for SqliteStore {
    async fn create_subscription(
        &self,
        sub: &Subscription,
        secrets: &[SigningSecret],
    ) -> Result<()> {
        let row = SubscriptionRow::of(sub)?;
        let secrets = secrets.to_vec();
        self.db
            .write(move |tx| {
                // The feed lives in the same tenant partition; checking it here turns a
                // dangling feed id into NotFound rather than a foreign-key failure.
                let feed_found = exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM feeds WHERE tenant_id = ? AND id = ?)",
                    [row.tenant_id.as_str(), row.feed_id.as_str()],
                )?;
                if !feed_found {
                    return Err(CoreError::NotFound("feed"));
                }
                insert(
                    tx,
                    "INSERT INTO subscriptions (id, tenant_id, feed_id, subscriber_id, revision, doc)
                     VALUES (?, ?, ?, ?, ?, ?)",
                    params![
                        row.id.as_str(),
                        row.tenant_id.as_str(),
                        row.feed_id.as_str(),
                        row.subscriber_id,
                        row.revision,
                        row.doc
                    ],
                    "subscription",
                )?;
                crate::deliveries::start_position(tx, &row.tenant_id, &row.feed_id, &row.id)?;
                put_secrets(tx, &row.id, &secrets)
            })
            .await
    }

    async fn get_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Subscription> {
        self.get_in_tenant("subscriptions", tenant, id.as_str(), "subscription")
            .await
    }

    async fn locate_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        let id = id.clone();
        self.db
            .read(move |c| {
                one(
                    c,
                    "SELECT doc FROM subscriptions WHERE id = ?",
                    [id.as_str()],
                    "subscription",
                )
            })
            .await
    }

    async fn list_subscriptions_of_subscriber(
        &self,
        subscriber: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>> {
        self.list::<_, SubscriptionId>(
            "SELECT id, doc FROM subscriptions WHERE subscriber_id = ? AND id > ?
             ORDER BY id LIMIT ?",
            vec![subscriber.to_string()],
            page,
            decode_doc,
        )
        .await
    }

    async fn list_subscriptions_of_feed(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>> {
        self.list::<_, SubscriptionId>(
            "SELECT id, doc FROM subscriptions WHERE tenant_id = ? AND feed_id = ? AND id > ?
             ORDER BY id LIMIT ?",
            vec![tenant.to_string(), feed.to_string()],
            page,
            decode_doc,
        )
        .await
    }

    async fn update_subscription(
        &self,
        sub: &Subscription,
        secrets: Option<&[SigningSecret]>,
    ) -> Result<()> {
        let row = SubscriptionRow::of(sub)?;
        let next = sub.revision;
        let secrets = secrets.map(<[SigningSecret]>::to_vec);
        self.db
            .write(move |tx| {
                check_revision(
                    tx,
                    "SELECT revision FROM subscriptions WHERE tenant_id = ? AND id = ?",
                    [row.tenant_id.as_str(), row.id.as_str()],
                    next,
                    "subscription",
                )?;
                // The feed and subscriber are part of the subscription's identity; only the
                // document and revision change.
                run(
                    tx,
                    "UPDATE subscriptions SET revision = ?, doc = ? WHERE tenant_id = ? AND id = ?",
                    params![
                        row.revision,
                        row.doc,
                        row.tenant_id.as_str(),
                        row.id.as_str()
                    ],
                )?;
                match secrets {
                    Some(secrets) => put_secrets(tx, &row.id, &secrets),
                    None => Ok(()),
                }
            })
            .await
    }

    async fn list_active_subscriptions(&self, page: &PageRequest) -> Result<Page<Subscription>> {
        // The condition repeats the partial index `subscriptions_active` (0002) word for word,
        // which is what lets SQLite use it.
        self.list::<_, SubscriptionId>(
            "SELECT id, doc FROM subscriptions
             WHERE json_extract(doc, '$.status') = 'active' AND id > ?
             ORDER BY id LIMIT ?",
            vec![],
            page,
            decode_doc,
        )
        .await
    }

    async fn list_all_subscriptions(&self, page: &PageRequest) -> Result<Page<Subscription>> {
        self.list::<_, SubscriptionId>(
            "SELECT id, doc FROM subscriptions WHERE id > ? ORDER BY id LIMIT ?",
            vec![],
            page,
            decode_doc,
        )
        .await
    }

    async fn get_signing_secrets(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Vec<SigningSecret>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.db
            .read(move |c| {
                subscription_in_tenant(c, &tenant, &id)?;
                let mut stmt = c
                    .prepare_cached(
                        "SELECT doc FROM signing_secrets WHERE subscription_id = ? ORDER BY position",
                    )
                    .map_err(sql_error)?;
                let mut rows = stmt.query([id.as_str()]).map_err(sql_error)?;
                let mut secrets = Vec::new();
                while let Some(row) = rows.next().map_err(sql_error)? {
                    secrets.push(from_doc(&row.get::<_, String>(0).map_err(sql_error)?)?);
                }
                Ok(secrets)
            })
            .await
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> Result<IdempotencyState> {
        let (scope, key, fingerprint) = (scope.to_owned(), key.to_owned(), fingerprint.to_owned());
        let created_at = now
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(CoreError::internal)?;
        self.db
            .write(move |tx| {
                type Stored = (String, Option<i64>, Option<Vec<u8>>, String);
                let stored: Option<Stored> = tx
                    .prepare_cached(
                        "SELECT fingerprint, status, body, created_at FROM idempotency WHERE scope = ? AND key = ?",
                    )
                    .map_err(sql_error)?
                    .query_row([&scope, &key], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()
                    .map_err(sql_error)?;
                match stored {
                    None => {
                        run(
                            tx,
                            "INSERT INTO idempotency (scope, key, fingerprint, created_at)
                             VALUES (?, ?, ?, ?)",
                            [&scope, &key, &fingerprint, &created_at],
                        )?;
                        Ok(IdempotencyState::Started)
                    }
                    Some((stored_fingerprint, _, _, _)) if stored_fingerprint != fingerprint => {
                        Ok(IdempotencyState::Conflict)
                    }
                    Some((_, Some(status), body, _)) => {
                        Ok(IdempotencyState::Completed(StoredResponse {
                            status: u16::try_from(status).map_err(CoreError::internal)?,
                            body: body.unwrap_or_default(),
                        }))
                    }
                    Some((_, None, _, reserved_at)) => {
                        let reserved_at = time::OffsetDateTime::parse(
                            &reserved_at,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .map_err(CoreError::internal)?;
                        if now - reserved_at > IDEMPOTENCY_RESERVATION_TIMEOUT {
                            run(
                                tx,
                                "UPDATE idempotency SET created_at = ? WHERE scope = ? AND key = ?",
                                [&created_at, &scope, &key],
                            )?;
                            Ok(IdempotencyState::Started)
                        } else {
                            Ok(IdempotencyState::Conflict)
                        }
                    }
                }
            })
            .await
    }

    async fn complete(&self, scope: &str, key: &str, response: &StoredResponse) -> Result<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        let (status, body) = (i64::from(response.status), response.body.clone());
        self.db
            .write(move |tx| {
                match run(
                    tx,
                    "UPDATE idempotency SET status = ?, body = ? WHERE scope = ? AND key = ?",
                    params![status, body, scope, key],
                )? {
                    0 => Err(CoreError::NotFound("idempotency key")),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn abandon(&self, scope: &str, key: &str) -> Result<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.db
            .write(move |tx| {
                // A completed response stays: dropping it would let a retry run the request twice.
                run(
                    tx,
                    "DELETE FROM idempotency WHERE scope = ? AND key = ? AND status IS NULL",
                    [&scope, &key],
                )?;
                Ok(())
            })
            .await
    }
}

impl Store for SqliteStore {
    fn ping(&self) -> Result<()> {
        self.db.ping()
    }
}
