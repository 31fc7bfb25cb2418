//! Vendors, subscriber profiles and ingest API keys.

use super::*;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::Delete;
use wharf_core::domain::*;
use wharf_core::ports::{AccountStore, ApiKeyStore};
use wharf_core::{ApiKeyId, TenantId, UserId, VendorId};

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

pub(super) fn delete_op(
    table: &str,
    pk: String,
    sk: String,
    must_exist: bool,
) -> Result<TransactWriteItem> {
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
        let vendor = self.get_vendor(id).await?.moved(from, to)?;
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
        self.put_new(subscriber_item(subscriber)?, "subscriber")
            .await
    }

    async fn get_subscriber(&self, id: &UserId) -> Result<Subscriber> {
        self.get_doc(&format!("S#{id}"), "SUBSCRIBER", "subscriber")
            .await
    }

    async fn update_subscriber(&self, subscriber: &Subscriber) -> Result<()> {
        self.put_existing(subscriber_item(subscriber)?, "subscriber")
            .await
    }
}

/// A subscriber's profile, in its own partition.
fn subscriber_item(subscriber: &Subscriber) -> Result<Item> {
    item(
        format!("S#{}", subscriber.id),
        "SUBSCRIBER",
        "subscriber",
        subscriber,
    )
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
