//! Sources, feeds, the catalog and reference rows on SQLite.

use super::*;

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
    Ok(CatalogEntry::of(feed, vendor, source.schema))
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

    async fn list_deprecated_feeds(&self, page: &PageRequest) -> Result<Page<Feed>> {
        self.list::<_, FeedId>(
            "SELECT id, doc FROM feeds WHERE status = 'published'
               AND json_extract(doc, '$.ends_at') IS NOT NULL
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
