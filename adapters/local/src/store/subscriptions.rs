//! Subscriptions with their signing secrets, and idempotency keys, on SQLite.

use super::*;

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
        let backfill_after = sub.backfill.map(|g| g.after);
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
                crate::deliveries::start_position(
                    tx,
                    &row.tenant_id,
                    &row.feed_id,
                    &row.id,
                    backfill_after,
                )?;
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
                let kept = |reserved_at: &str| {
                    time::OffsetDateTime::parse(
                        reserved_at,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_ok_and(|at| now - at <= IDEMPOTENCY_KEPT)
                };
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
                    Some((_, _, _, reserved_at)) if !kept(&reserved_at) => {
                        run(
                            tx,
                            "UPDATE idempotency SET fingerprint = ?, status = NULL, body = NULL,
                             created_at = ? WHERE scope = ? AND key = ?",
                            [&fingerprint, &created_at, &scope, &key],
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

    async fn expire_idempotency(&self, before: Timestamp) -> Result<usize> {
        let before = before
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(CoreError::internal)?;
        self.db
            .write(move |tx| {
                run(
                    tx,
                    "DELETE FROM idempotency WHERE julianday(created_at) < julianday(?)",
                    [&before],
                )
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
