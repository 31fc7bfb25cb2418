//! The model registry on DynamoDB: one item per version in the vendor's partition, sorted by
//! name then version.

use super::accounts::tenant_pk;
use super::*;
use async_trait::async_trait;
use wharf_core::VendorId;
use wharf_core::domain::ModelVersion;
use wharf_core::ports::ModelStore;

fn version_sk(name: &str, version: u32) -> String {
    format!("MODEL#{name}#{version:010}")
}

#[async_trait]
impl ModelStore for DynamoStore {
    async fn put_model_version(&self, model: &ModelVersion) -> Result<()> {
        let item = item(
            tenant_pk(&model.vendor_id),
            version_sk(&model.name, model.version),
            "model",
            model,
        )?;
        self.put_new(item, "model version").await
    }

    async fn model_versions(&self, vendor: &VendorId, name: &str) -> Result<Vec<ModelVersion>> {
        let query =
            Query::table(tenant_pk(vendor)).sort(Sort::BeginsWith(format!("MODEL#{name}#")));
        self.query_all(&query, None)
            .await?
            .iter()
            .map(from_item)
            .collect()
    }

    async fn all_model_versions(&self, vendor: &VendorId) -> Result<Vec<ModelVersion>> {
        let query = Query::table(tenant_pk(vendor)).sort(Sort::BeginsWith("MODEL#".into()));
        self.query_all(&query, None)
            .await?
            .iter()
            .map(from_item)
            .collect()
    }

    async fn delete_model_version(
        &self,
        vendor: &VendorId,
        name: &str,
        version: u32,
    ) -> Result<()> {
        let sk = version_sk(name, version);
        if self.get(&tenant_pk(vendor), &sk).await?.is_none() {
            return Err(CoreError::NotFound("model version"));
        }
        self.delete(&tenant_pk(vendor), &sk).await
    }
}
