//! Sources, feeds, the catalog and reference rows.

use super::accounts::tenant_pk;
use super::subscriptions::feed_subscriptions_pk;
use super::*;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use wharf_core::domain::*;
use wharf_core::ports::{FeedStore, ReferenceStore, SourceStore};
use wharf_core::{FeedId, SourceId, TenantId};

fn source_item(source: &Source) -> Result<Item> {
    let mut item = item(
        tenant_pk(&source.tenant_id),
        format!("SRC#{}", source.id),
        "source",
        source,
    )?;
    if source.kind == SourceKind::HttpPoll {
        item.insert("gsi3pk".into(), s("POLL_SOURCES"));
        item.insert("gsi3sk".into(), s(source.id.as_str()));
    }
    Ok(item)
}

#[async_trait]
impl SourceStore for DynamoStore {
    async fn create_source(&self, source: &Source) -> Result<()> {
        self.put_new(source_item(source)?, "source").await
    }

    async fn get_source(&self, tenant: &TenantId, id: &SourceId) -> Result<Source> {
        self.get_doc(&tenant_pk(tenant), &format!("SRC#{id}"), "source")
            .await
    }

    async fn list_sources(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Source>> {
        let query = Query::table(tenant_pk(tenant)).sort(Sort::BeginsWith("SRC#".into()));
        docs(self.query_page(&query, page, keep_all).await?)
    }

    async fn update_source(&self, source: &Source) -> Result<()> {
        let sent = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(source_item(source)?))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        if written(sent, "updating a source")? {
            Ok(())
        } else {
            Err(CoreError::NotFound("source"))
        }
    }

    async fn list_poll_sources(&self, page: &PageRequest) -> Result<Page<Source>> {
        docs(
            self.query_page(&Query::index("gsi3", "POLL_SOURCES"), page, keep_all)
                .await?,
        )
    }

    async fn delete_source(&self, tenant: &TenantId, id: &SourceId) -> Result<()> {
        self.get_source(tenant, id).await?;
        let feeds: Vec<Feed> = self
            .query_all(
                &Query::table(tenant_pk(tenant)).sort(Sort::BeginsWith("FEED#".into())),
                None,
            )
            .await?
            .iter()
            .filter(|i| str_attr(i, "kind").is_ok_and(|k| k == "feed"))
            .map(from_item)
            .collect::<Result<_>>()?;
        if feeds.iter().any(|f| &f.source_id == id) {
            return Err(CoreError::Conflict(
                "the source is used by a feed; delete the feed first".into(),
            ));
        }
        self.delete(&tenant_pk(tenant), &format!("SRC#{id}")).await
    }
}

fn feed_item(feed: &Feed) -> Result<Item> {
    let mut item = item(
        tenant_pk(&feed.tenant_id),
        format!("FEED#{}", feed.id),
        "feed",
        feed,
    )?;
    item.insert("gsi1pk".into(), s(format!("FEED#{}", feed.id)));
    item.insert("gsi1sk".into(), s("FEED"));
    if feed.status == FeedStatus::Published {
        item.insert("gsi2pk".into(), s("PUBLISHED_FEEDS"));
        item.insert("gsi2sk".into(), s(feed.id.as_str()));
    }
    item.insert("revision".into(), n(feed.revision));
    Ok(item)
}

/// A check, in the same transaction as a feed's write, that its source is the tenant's.
fn source_check(table: &str, feed: &Feed) -> Result<TransactWriteItem> {
    Ok(TransactWriteItem::builder()
        .condition_check(
            aws_sdk_dynamodb::types::ConditionCheck::builder()
                .table_name(table)
                .set_key(Some(key(
                    tenant_pk(&feed.tenant_id),
                    format!("SRC#{}", feed.source_id),
                )))
                .condition_expression("attribute_exists(pk)")
                .build()
                .map_err(CoreError::internal)?,
        )
        .build())
}

#[async_trait]
impl FeedStore for DynamoStore {
    async fn create_feed(&self, feed: &Feed) -> Result<()> {
        let outcome = self
            .transact(vec![
                source_check(self.table(), feed)?,
                put_op(feed_item(feed)?, self.table(), true)?,
            ])
            .await?;
        match outcome.as_deref() {
            None => Ok(()),
            Some([source, ..]) if source == "ConditionalCheckFailed" => {
                Err(CoreError::NotFound("source"))
            }
            Some(_) => Err(CoreError::Conflict("feed already exists".into())),
        }
    }

    async fn get_feed(&self, tenant: &TenantId, id: &FeedId) -> Result<Feed> {
        self.get_doc(&tenant_pk(tenant), &format!("FEED#{id}"), "feed")
            .await
    }

    async fn list_feeds(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Feed>> {
        let query = Query::table(tenant_pk(tenant)).sort(Sort::BeginsWith("FEED#".into()));
        docs(
            self.query_page(&query, page, |items: Vec<Item>| {
                ready(Ok(items
                    .into_iter()
                    .filter(|i| str_attr(i, "kind").is_ok_and(|k| k == "feed"))
                    .collect()))
            })
            .await?,
        )
    }

    async fn update_feed(&self, feed: &Feed) -> Result<()> {
        let previous = feed.revision.checked_sub(1).ok_or_else(|| {
            CoreError::Conflict("the feed was changed concurrently; retry".into())
        })?;
        let put = aws_sdk_dynamodb::types::Put::builder()
            .table_name(self.table())
            .set_item(Some(feed_item(feed)?))
            .condition_expression("#revision = :previous")
            .expression_attribute_names("#revision", "revision")
            .expression_attribute_values(":previous", n(previous))
            .build()
            .map_err(CoreError::internal)?;
        let outcome = self
            .transact(vec![
                source_check(self.table(), feed)?,
                TransactWriteItem::builder().put(put).build(),
            ])
            .await?;
        match outcome.as_deref() {
            None => Ok(()),
            Some([_, stored]) if stored == "ConditionalCheckFailed" => {
                self.get_feed(&feed.tenant_id, &feed.id).await?;
                Err(CoreError::Conflict(
                    "the feed was changed concurrently; retry".into(),
                ))
            }
            Some(_) => {
                self.get_feed(&feed.tenant_id, &feed.id).await?;
                Err(CoreError::NotFound("source"))
            }
        }
    }

    async fn delete_feed(&self, tenant: &TenantId, id: &FeedId) -> Result<()> {
        self.get_feed(tenant, id).await?;
        let subscribed = self
            .query_all(
                &Query::index("gsi3", feed_subscriptions_pk(tenant, id)),
                Some(1),
            )
            .await?;
        if !subscribed.is_empty() {
            return Err(CoreError::Conflict(
                "the feed has subscriptions; archive it instead".into(),
            ));
        }
        self.delete(&tenant_pk(tenant), &format!("FEED#{id}")).await
    }

    async fn locate_feed(&self, id: &FeedId) -> Result<Feed> {
        let found = self
            .query_all(&Query::index("gsi1", format!("FEED#{id}")), Some(1))
            .await?;
        match found.first() {
            // The index may lag; the tenant's own item is the truth.
            Some(item) => {
                let feed: Feed = from_item(item)?;
                self.get_feed(&feed.tenant_id, id).await
            }
            None => Err(CoreError::NotFound("feed")),
        }
    }

    async fn list_windowed_feeds(&self, page: &PageRequest) -> Result<Page<Feed>> {
        self.published_feeds_where(page, |feed| {
            feed.pipeline.rules.iter().any(Rule::is_stateful)
        })
        .await
    }

    async fn list_deprecated_feeds(&self, page: &PageRequest) -> Result<Page<Feed>> {
        self.published_feeds_where(page, |feed| feed.ends_at.is_some())
            .await
    }

    async fn list_catalog(
        &self,
        query: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<CatalogEntry>> {
        let folded = query.unwrap_or_default().to_lowercase();
        let folded = &folded;
        let page = self
            .query_page(
                &Query::index("gsi2", "PUBLISHED_FEEDS"),
                page,
                |items: Vec<Item>| -> Kept<'_> {
                    Box::pin(async move {
                        let mut feeds = Vec::new();
                        for item in items {
                            let feed: Feed = from_item(&item)?;
                            let matches = feed.name.to_lowercase().contains(folded.as_str())
                                || feed.description.to_lowercase().contains(folded.as_str());
                            if feed.visibility == Visibility::Public && matches {
                                feeds.push((item, feed));
                            }
                        }
                        let vendors = self
                            .batch_get(
                                feeds
                                    .iter()
                                    .map(|(_, f)| (tenant_pk(&f.tenant_id), "VENDOR".to_owned()))
                                    .collect(),
                            )
                            .await?;
                        let mut kept = Vec::new();
                        for (mut item, feed) in feeds {
                            let Some(vendor) =
                                vendors.get(&(tenant_pk(&feed.tenant_id), "VENDOR".to_owned()))
                            else {
                                continue;
                            };
                            let vendor: Vendor = from_item(vendor)?;
                            if vendor.status != VendorStatus::Active {
                                continue;
                            }
                            let source =
                                self.get_source(&feed.tenant_id, &feed.source_id).await.ok();
                            let entry =
                                CatalogEntry::of(feed, vendor, source.and_then(|s| s.schema));
                            item.insert(
                                "doc".into(),
                                s(serde_json::to_string(&entry).map_err(CoreError::internal)?),
                            );
                            kept.push(item);
                        }
                        Ok(kept)
                    })
                },
            )
            .await?;
        docs(page)
    }
}

fn reference_pk(tenant: &TenantId, table: &str) -> String {
    format!("T#{tenant}#REF#{table}")
}

#[async_trait]
impl ReferenceStore for DynamoStore {
    async fn put_reference(
        &self,
        tenant: &TenantId,
        table: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<bool> {
        let old = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item(
                reference_pk(tenant, table),
                key,
                "reference",
                value,
            )?))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| aws_error("storing a reference row", e))?
            .attributes;
        Ok(old.is_none_or(|o| o.is_empty()))
    }

    async fn get_reference(
        &self,
        tenant: &TenantId,
        table: &str,
        key: &str,
    ) -> Result<serde_json::Value> {
        self.get_doc(&reference_pk(tenant, table), key, "reference row")
            .await
    }
}

impl DynamoStore {
    /// A page of published feeds, across tenants, that `keep` holds for.
    async fn published_feeds_where(
        &self,
        page: &PageRequest,
        keep: fn(&Feed) -> bool,
    ) -> Result<Page<Feed>> {
        let page = self
            .query_page(
                &Query::index("gsi2", "PUBLISHED_FEEDS"),
                page,
                |items: Vec<Item>| {
                    let mut kept = Vec::new();
                    for item in items {
                        match from_item::<Feed>(&item) {
                            Ok(feed) if keep(&feed) => kept.push(item),
                            Ok(_) => {}
                            Err(e) => return ready(Err(e)),
                        }
                    }
                    ready(Ok(kept))
                },
            )
            .await?;
        docs(page)
    }
}
