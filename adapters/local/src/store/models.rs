//! The model registry on SQLite: one row per version, keyed by vendor, name and version.

use super::*;
use wharf_core::ports::ModelStore;

const SELECT_VERSIONS: &str =
    "SELECT doc FROM model_versions WHERE vendor_id = ?1 AND (?2 IS NULL OR name = ?2)
     ORDER BY name, version";

#[async_trait]
impl ModelStore for SqliteStore {
    async fn put_model_version(&self, model: &ModelVersion) -> Result<()> {
        let doc = to_doc(model)?;
        let (vendor, name, version) = (
            model.vendor_id.to_string(),
            model.name.clone(),
            model.version,
        );
        self.db
            .write(move |tx| {
                insert(
                    tx,
                    "INSERT INTO model_versions (vendor_id, name, version, doc) VALUES (?, ?, ?, ?)",
                    params![vendor, name, version, doc],
                    "model version",
                )
            })
            .await
    }

    async fn model_versions(&self, vendor: &VendorId, name: &str) -> Result<Vec<ModelVersion>> {
        self.model_rows(vendor, Some(name)).await
    }

    async fn all_model_versions(&self, vendor: &VendorId) -> Result<Vec<ModelVersion>> {
        self.model_rows(vendor, None).await
    }

    async fn delete_model_version(
        &self,
        vendor: &VendorId,
        name: &str,
        version: u32,
    ) -> Result<()> {
        let (vendor, name) = (vendor.to_string(), name.to_owned());
        self.db
            .write(move |tx| {
                match run(
                    tx,
                    "DELETE FROM model_versions WHERE vendor_id = ? AND name = ? AND version = ?",
                    params![vendor, name, version],
                )? {
                    0 => Err(CoreError::NotFound("model version")),
                    _ => Ok(()),
                }
            })
            .await
    }
}

impl SqliteStore {
    async fn model_rows(&self, vendor: &VendorId, name: Option<&str>) -> Result<Vec<ModelVersion>> {
        let (vendor, name) = (vendor.to_string(), name.map(str::to_owned));
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(SELECT_VERSIONS).map_err(sql_error)?;
                let mut rows = stmt.query(params![vendor, name]).map_err(sql_error)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(sql_error)? {
                    let doc: String = row.get(0).map_err(sql_error)?;
                    out.push(from_doc(&doc)?);
                }
                Ok(out)
            })
            .await
    }
}
