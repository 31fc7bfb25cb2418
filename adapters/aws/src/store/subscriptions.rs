//! Subscriptions with their signing secrets and delivery positions, and idempotency keys.

use super::accounts::tenant_pk;
use super::*;
use async_trait::async_trait;
use wharf_core::domain::*;
use wharf_core::domain::{IdempotencyState, StoredResponse};
use wharf_core::ports::{
    IDEMPOTENCY_KEPT, IDEMPOTENCY_RESERVATION_TIMEOUT, IdempotencyStore, SubscriptionStore,
};
use wharf_core::{FeedId, SubscriptionId, TenantId, UserId, VendorId};

pub(super) fn feed_subscriptions_pk(tenant: &TenantId, feed: &FeedId) -> String {
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
        let start = match sub.backfill {
            Some(grant) => grant.after,
            None => {
                wharf_core::ports::RecordStore::output_head(self, &sub.tenant_id, &sub.feed_id)
                    .await?
            }
        };
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
        position.insert("pos".into(), n(start));
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
            n(now.unix_timestamp() + IDEMPOTENCY_KEPT.as_secs() as i64),
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
        let reserved_us = num_attr(&stored, "reserved_us").unwrap_or(0);
        let kept = i64::try_from(IDEMPOTENCY_KEPT.as_micros()).map_err(CoreError::internal)?;
        if micros(now) - i64::try_from(reserved_us).unwrap_or(0) > kept {
            // Older than a key is kept (the table's expiry is not immediate): a new key.
            return self.take_over(reservation, reserved_us, false).await;
        }
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
        let timeout = i64::try_from(IDEMPOTENCY_RESERVATION_TIMEOUT.as_micros())
            .map_err(CoreError::internal)?;
        if micros(now) - i64::try_from(reserved_us).unwrap_or(0) <= timeout {
            return Ok(IdempotencyState::Conflict);
        }
        self.take_over(reservation, reserved_us, true).await
    }

    async fn expire_idempotency(&self, _before: Timestamp) -> Result<usize> {
        // The table's time to live removes keys a day after their reservation.
        Ok(0)
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
    counted: wharf_core::domain::Counted,
) -> Result<TransactWriteItem> {
    Ok(TransactWriteItem::builder()
        .update(super::usage::counter_update(
            table, tenant, sub, subscriber, at, counted,
        )?)
        .build())
}

impl DynamoStore {
    /// Replaces the idempotency item reserved at `reserved_us` by `reservation`, unless
    /// someone else just did (or, `unfinished`, it completed meanwhile).
    async fn take_over(
        &self,
        reservation: Item,
        reserved_us: u64,
        unfinished: bool,
    ) -> Result<IdempotencyState> {
        let mut put = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(reservation))
            .expression_attribute_values(":old", n(reserved_us));
        put = if unfinished {
            put.condition_expression("reserved_us = :old AND attribute_not_exists(#status)")
                .expression_attribute_names("#status", "status")
        } else {
            put.condition_expression("reserved_us = :old")
        };
        if written(put.send().await, "taking over an idempotency key")? {
            Ok(IdempotencyState::Started)
        } else {
            Ok(IdempotencyState::Conflict)
        }
    }
}
