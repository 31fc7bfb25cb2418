//! Vendors, subscriber profiles and ingest API keys on SQLite.

use super::*;

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
                let vendor: Vendor = one(
                    tx,
                    "SELECT doc FROM vendors WHERE id = ?",
                    [id.as_str()],
                    "vendor",
                )?;
                let vendor = vendor.moved(from, to)?;
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

    async fn update_subscriber(&self, subscriber: &Subscriber) -> Result<()> {
        let (id, doc) = (subscriber.id.to_string(), to_doc(subscriber)?);
        self.db
            .write(move |tx| {
                match run(
                    tx,
                    "UPDATE subscribers SET doc = ? WHERE id = ?",
                    [&doc, &id],
                )? {
                    0 => Err(CoreError::NotFound("subscriber")),
                    _ => Ok(()),
                }
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
