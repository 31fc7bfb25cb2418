//! Vendors, subscribers, API keys, sources, feeds, reference rows, subscriptions and
//! idempotency keys.

use super::*;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, ReturnValue};
use wharf_core::domain::*;
use wharf_core::domain::{IdempotencyState, StoredResponse};
use wharf_core::ports::{
    AccountStore, ApiKeyStore, FeedStore, IDEMPOTENCY_RESERVATION_TIMEOUT, IdempotencyStore,
    ReferenceStore, SourceStore, SubscriptionStore,
};
use wharf_core::{ApiKeyId, FeedId, SourceId, SubscriptionId, TenantId, UserId, VendorId};

pub(super) fn tenant_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}")
}

fn vendor_item(vendor: &Vendor) -> Result<Item> {
    let mut item = item(tenant_pk(&vendor.id), "VENDOR", "vendor", vendor)?;
    item.insert(
        "gsi1pk".into(),
        s(format!("VENDORS#{}", label(&vendor.status)?)),
    );
    item.insert("gsi1sk".into(), s(vendor.id.as_str()));
    item.insert("gsi2pk".into(), s("VENDORS"));
    item.insert("gsi2sk".into(), s(vendor.id.as_str()));
    item.insert("status".into(), s(label(&vendor.status)?));
    Ok(item)
}

fn delete_op(table: &str, pk: String, sk: String, must_exist: bool) -> Result<TransactWriteItem> {
    let mut delete = Delete::builder()
        .table_name(table)
        .set_key(Some(key(pk, sk)));
    if must_exist {
        delete = delete.condition_expression("attribute_exists(pk)");
    }
    Ok(TransactWriteItem::builder()
        .delete(delete.build().map_err(CoreError::internal)?)
        .build())
}

#[async_trait]
impl AccountStore for DynamoStore {
    async fn create_vendor(&self, vendor: &Vendor) -> Result<()> {
        self.put_new(vendor_item(vendor)?, "vendor").await
    }

    async fn get_vendor(&self, id: &VendorId) -> Result<Vendor> {
        self.get_doc(&tenant_pk(id), "VENDOR", "vendor").await
    }

    async fn set_vendor_status(
        &self,
        id: &VendorId,
        from: VendorStatus,
        to: VendorStatus,
    ) -> Result<Vendor> {
        let mut vendor = self.get_vendor(id).await?;
        if vendor.status != from {
            return Err(CoreError::Conflict(format!(
                "the vendor is {}, not {}",
                label(&vendor.status)?,
                label(&from)?
            )));
        }
        vendor.status = to;
        let sent = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(vendor_item(&vendor)?))
            .condition_expression("#status = :from")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":from", s(label(&from)?))
            .send()
            .await;
        if written(sent, "changing a vendor's status")? {
            Ok(vendor)
        } else {
            Err(CoreError::Conflict(
                "the vendor's status changed concurrently; retry".into(),
            ))
        }
    }

    async fn list_vendors(
        &self,
        status: Option<VendorStatus>,
        page: &PageRequest,
    ) -> Result<Page<Vendor>> {
        let query = match status {
            Some(status) => Query::index("gsi1", format!("VENDORS#{}", label(&status)?)),
            None => Query::index("gsi2", "VENDORS"),
        };
        docs(self.query_page(&query, page, keep_all).await?)
    }

    async fn delete_vendor(&self, id: &VendorId) -> Result<()> {
        let owned = self
            .query_all(&Query::table(tenant_pk(id)), Some(2))
            .await?;
        if owned.is_empty() {
            return Err(CoreError::NotFound("vendor"));
        }
        // Only an empty tenant may go: anything it owns would be orphaned.
        if owned
            .iter()
            .any(|i| str_attr(i, "sk").is_ok_and(|sk| sk != "VENDOR"))
        {
            return Err(CoreError::Conflict(
                "the vendor still owns sources, feeds, keys or subscriptions".into(),
            ));
        }
        self.delete(&tenant_pk(id), "VENDOR").await
    }

    async fn create_subscriber(&self, subscriber: &Subscriber) -> Result<()> {
        let item = item(
            format!("S#{}", subscriber.id),
            "SUBSCRIBER",
            "subscriber",
            subscriber,
        )?;
        self.put_new(item, "subscriber").await
    }

    async fn get_subscriber(&self, id: &UserId) -> Result<Subscriber> {
        self.get_doc(&format!("S#{id}"), "SUBSCRIBER", "subscriber")
            .await
    }
}

/// The global item that finds a key by id alone (to authenticate it), next to the tenant's.
fn key_lookup_pk(id: &ApiKeyId) -> String {
    format!("KEY#{id}")
}

#[async_trait]
impl ApiKeyStore for DynamoStore {
    async fn create_api_key(&self, key: &ApiKey, secret_digest: &str) -> Result<()> {
        let mut owned = item(
            tenant_pk(&key.tenant_id),
            format!("KEY#{}", key.id),
            "api_key",
            key,
        )?;
        owned.insert("digest".into(), s(secret_digest));
        let mut lookup = item(key_lookup_pk(&key.id), "KEY", "api_key_lookup", key)?;
        lookup.insert("digest".into(), s(secret_digest));
        let written = self
            .write_new_groups(vec![vec![
                put_op(owned, self.table(), true)?,
                put_op(lookup, self.table(), true)?,
            ]])
            .await?;
        match written.as_slice() {
            [true] => Ok(()),
            _ => Err(CoreError::Conflict("api key already exists".into())),
        }
    }

    async fn get_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<ApiKey> {
        self.get_doc(&tenant_pk(tenant), &format!("KEY#{id}"), "api key")
            .await
    }

    async fn list_api_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        let query = Query::table(tenant_pk(tenant)).sort(Sort::BeginsWith("KEY#".into()));
        docs(self.query_page(&query, page, keep_all).await?)
    }

    async fn delete_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<()> {
        let outcome = self
            .transact(vec![
                delete_op(self.table(), tenant_pk(tenant), format!("KEY#{id}"), true)?,
                delete_op(self.table(), key_lookup_pk(id), "KEY".into(), false)?,
            ])
            .await?;
        match outcome {
            None => Ok(()),
            Some(_) => Err(CoreError::NotFound("api key")),
        }
    }

    async fn find_api_key(&self, id: &ApiKeyId) -> Result<(ApiKey, String)> {
        let item = self
            .get(&key_lookup_pk(id), "KEY")
            .await?
            .ok_or(CoreError::NotFound("api key"))?;
        Ok((from_item(&item)?, str_attr(&item, "digest")?.to_owned()))
    }
}

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
        let page = self
            .query_page(
                &Query::index("gsi2", "PUBLISHED_FEEDS"),
                page,
                |items: Vec<Item>| {
                    let mut kept = Vec::new();
                    for item in items {
                        match from_item::<Feed>(&item) {
                            Ok(feed) if feed.pipeline.rules.iter().any(Rule::is_stateful) => {
                                kept.push(item)
                            }
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
                            let entry = CatalogEntry {
                                feed_id: feed.id,
                                vendor_id: vendor.id,
                                vendor_name: vendor.name,
                                name: feed.name,
                                description: feed.description,
                                plans: feed.plans,
                                schema: source.and_then(|s| s.schema),
                                sample: feed.sample,
                            };
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

fn feed_subscriptions_pk(tenant: &TenantId, feed: &FeedId) -> String {
    format!("T#{tenant}#FEEDSUBS#{feed}")
}

/// The global item that finds a subscription's tenant by its id alone.
fn subscription_lookup_pk(id: &SubscriptionId) -> String {
    format!("SUBID#{id}")
}

pub(super) fn position_sk(id: &SubscriptionId) -> String {
    format!("SUB#{id}#POS")
}

fn subscription_item(sub: &Subscription) -> Result<Item> {
    let mut item = item(
        tenant_pk(&sub.tenant_id),
        format!("SUB#{}", sub.id),
        "subscription",
        sub,
    )?;
    item.insert("gsi1pk".into(), s("SUBSCRIPTIONS"));
    item.insert("gsi1sk".into(), s(sub.id.as_str()));
    item.insert("gsi2pk".into(), s(format!("S#{}", sub.subscriber_id)));
    item.insert("gsi2sk".into(), s(format!("SUB#{}", sub.id)));
    item.insert(
        "gsi3pk".into(),
        s(feed_subscriptions_pk(&sub.tenant_id, &sub.feed_id)),
    );
    item.insert("gsi3sk".into(), s(sub.id.as_str()));
    item.insert("status".into(), s(label(&sub.status)?));
    item.insert("revision".into(), n(sub.revision));
    Ok(item)
}

fn secrets_item(sub: &Subscription, secrets: &[SigningSecret]) -> Result<Item> {
    item(
        tenant_pk(&sub.tenant_id),
        format!("SUB#{}#SECRETS", sub.id),
        "secrets",
        &secrets,
    )
}

fn only_subscriptions(items: Vec<Item>) -> Vec<Item> {
    items
        .into_iter()
        .filter(|i| str_attr(i, "kind").is_ok_and(|k| k == "subscription"))
        .collect()
}

#[async_trait]
impl SubscriptionStore for DynamoStore {
    async fn create_subscription(
        &self,
        sub: &Subscription,
        secrets: &[SigningSecret],
    ) -> Result<()> {
        let head =
            wharf_core::ports::RecordStore::output_head(self, &sub.tenant_id, &sub.feed_id).await?;
        let feed_check = TransactWriteItem::builder()
            .condition_check(
                aws_sdk_dynamodb::types::ConditionCheck::builder()
                    .table_name(self.table())
                    .set_key(Some(key(
                        tenant_pk(&sub.tenant_id),
                        format!("FEED#{}", sub.feed_id),
                    )))
                    .condition_expression("attribute_exists(pk)")
                    .build()
                    .map_err(CoreError::internal)?,
            )
            .build();
        let mut lookup = key(subscription_lookup_pk(&sub.id), "SUB");
        lookup.insert("tenant_id".into(), s(sub.tenant_id.as_str()));
        let mut position = key(tenant_pk(&sub.tenant_id), position_sk(&sub.id));
        position.insert("kind".into(), s("position"));
        position.insert("pos".into(), n(head));
        position.insert("subscriber_id".into(), s(sub.subscriber_id.as_str()));
        let outcome = self
            .transact(vec![
                feed_check,
                put_op(subscription_item(sub)?, self.table(), true)?,
                put_op(lookup, self.table(), true)?,
                put_op(position, self.table(), false)?,
                put_op(secrets_item(sub, secrets)?, self.table(), false)?,
            ])
            .await?;
        match outcome.as_deref() {
            None => Ok(()),
            Some([feed, ..]) if feed == "ConditionalCheckFailed" => {
                Err(CoreError::NotFound("feed"))
            }
            Some(_) => Err(CoreError::Conflict("subscription already exists".into())),
        }
    }

    async fn get_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Subscription> {
        self.get_doc(&tenant_pk(tenant), &format!("SUB#{id}"), "subscription")
            .await
    }

    async fn locate_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        let lookup = self
            .get(&subscription_lookup_pk(id), "SUB")
            .await?
            .ok_or(CoreError::NotFound("subscription"))?;
        let tenant =
            VendorId::parse(str_attr(&lookup, "tenant_id")?).map_err(CoreError::internal)?;
        self.get_subscription(&tenant, id).await
    }

    async fn list_subscriptions_of_subscriber(
        &self,
        subscriber: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>> {
        let query =
            Query::index("gsi2", format!("S#{subscriber}")).sort(Sort::BeginsWith("SUB#".into()));
        docs(self.query_page(&query, page, keep_all).await?)
    }

    async fn list_subscriptions_of_feed(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>> {
        let query = Query::index("gsi3", feed_subscriptions_pk(tenant, feed));
        docs(self.query_page(&query, page, keep_all).await?)
    }

    async fn update_subscription(
        &self,
        sub: &Subscription,
        secrets: Option<&[SigningSecret]>,
    ) -> Result<()> {
        let previous = sub.revision.checked_sub(1).ok_or_else(|| {
            CoreError::Conflict("the subscription was changed concurrently; retry".into())
        })?;
        let put = aws_sdk_dynamodb::types::Put::builder()
            .table_name(self.table())
            .set_item(Some(subscription_item(sub)?))
            .condition_expression("#revision = :previous")
            .expression_attribute_names("#revision", "revision")
            .expression_attribute_values(":previous", n(previous))
            .build()
            .map_err(CoreError::internal)?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        if let Some(secrets) = secrets {
            items.push(put_op(secrets_item(sub, secrets)?, self.table(), false)?);
        }
        match self.transact(items).await? {
            None => Ok(()),
            Some(_) => {
                self.get_subscription(&sub.tenant_id, &sub.id).await?;
                Err(CoreError::Conflict(
                    "the subscription was changed concurrently; retry".into(),
                ))
            }
        }
    }

    async fn list_active_subscriptions(&self, page: &PageRequest) -> Result<Page<Subscription>> {
        let active = label(&SubscriptionStatus::Active)?;
        let page = self
            .query_page(
                &Query::index("gsi1", "SUBSCRIPTIONS"),
                page,
                |items: Vec<Item>| {
                    ready(Ok(only_subscriptions(items)
                        .into_iter()
                        .filter(|i| str_attr(i, "status").is_ok_and(|s| *s == active))
                        .collect()))
                },
            )
            .await?;
        docs(page)
    }

    async fn list_all_subscriptions(&self, page: &PageRequest) -> Result<Page<Subscription>> {
        docs(
            self.query_page(&Query::index("gsi1", "SUBSCRIPTIONS"), page, keep_all)
                .await?,
        )
    }

    async fn get_signing_secrets(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Vec<SigningSecret>> {
        self.get_subscription(tenant, id).await?;
        match self
            .get(&tenant_pk(tenant), &format!("SUB#{id}#SECRETS"))
            .await?
        {
            Some(item) => from_item(&item),
            None => Ok(Vec::new()),
        }
    }
}

fn idempotency_pk(scope: &str) -> String {
    format!("IDEM#{scope}")
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    async fn begin(
        &self,
        scope: &str,
        key_name: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> Result<IdempotencyState> {
        let pk = idempotency_pk(scope);
        let mut reservation = key(pk.clone(), key_name);
        reservation.insert("kind".into(), s("idempotency"));
        reservation.insert("fingerprint".into(), s(fingerprint));
        reservation.insert("reserved_us".into(), n(micros(now)));
        // Kept a day: long past any client's retries.
        reservation.insert(
            crate::bootstrap::TTL_ATTRIBUTE.into(),
            n(now.unix_timestamp() + 86_400),
        );
        match self.put_new(reservation.clone(), "idempotency key").await {
            Ok(()) => return Ok(IdempotencyState::Started),
            Err(CoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let Some(stored) = self.get(&pk, key_name).await? else {
            // Abandoned in between: the caller retries with a fresh reservation.
            return Ok(IdempotencyState::Conflict);
        };
        if str_attr(&stored, "fingerprint")? != fingerprint {
            return Ok(IdempotencyState::Conflict);
        }
        if let Ok(status) = num_attr(&stored, "status") {
            let body = match stored.get("body") {
                Some(AttributeValue::B(b)) => b.clone().into_inner(),
                _ => Vec::new(),
            };
            return Ok(IdempotencyState::Completed(StoredResponse {
                status: u16::try_from(status).map_err(CoreError::internal)?,
                body,
            }));
        }
        let reserved_us = num_attr(&stored, "reserved_us").unwrap_or(0);
        let timeout = i64::try_from(IDEMPOTENCY_RESERVATION_TIMEOUT.as_micros())
            .map_err(CoreError::internal)?;
        if micros(now) - i64::try_from(reserved_us).unwrap_or(0) <= timeout {
            return Ok(IdempotencyState::Conflict);
        }
        // Take the stale reservation over, unless someone else just did.
        let taken = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(reservation))
            .condition_expression("reserved_us = :old AND attribute_not_exists(#status)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":old", n(reserved_us))
            .send()
            .await;
        if written(taken, "taking over an idempotency key")? {
            Ok(IdempotencyState::Started)
        } else {
            Ok(IdempotencyState::Conflict)
        }
    }

    async fn complete(&self, scope: &str, key_name: &str, response: &StoredResponse) -> Result<()> {
        let sent = self
            .db()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(idempotency_pk(scope), key_name)))
            .update_expression("SET #status = :status, #body = :body")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#body", "body")
            .expression_attribute_values(":status", n(response.status))
            .expression_attribute_values(
                ":body",
                AttributeValue::B(aws_smithy_types::Blob::new(response.body.clone())),
            )
            .send()
            .await;
        if written(sent, "completing an idempotency key")? {
            Ok(())
        } else {
            Err(CoreError::NotFound("idempotency key"))
        }
    }

    async fn abandon(&self, scope: &str, key_name: &str) -> Result<()> {
        // A completed response stays: dropping it would let a retry run the request twice.
        let sent = self
            .db()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(idempotency_pk(scope), key_name)))
            .condition_expression("attribute_not_exists(#status)")
            .expression_attribute_names("#status", "status")
            .send()
            .await;
        // A completed key fails the condition and stays.
        written(sent, "abandoning an idempotency key")?;
        Ok(())
    }
}

/// An update adding `count` to a subscription's usage in the UTC hour of `at`.
pub(super) fn usage_update(
    table: &str,
    tenant: &TenantId,
    sub: &SubscriptionId,
    subscriber: &str,
    at: Timestamp,
    count: u64,
) -> Result<TransactWriteItem> {
    Ok(TransactWriteItem::builder()
        .update(super::usage::counter_update(
            table, tenant, sub, subscriber, at, count,
        )?)
        .build())
}
