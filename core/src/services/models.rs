//! The model registry: a vendor uploads ONNX files by name, each upload an immutable version,
//! checked by the engine before anything is stored.

use super::Services;
use crate::domain::*;
use crate::{CoreError, ModelId, VendorId};
use serde::Serialize;
use std::sync::Arc;

/// Largest model file `PUT /v1/models/{name}` takes.
pub const MAX_MODEL_BYTES: usize = 5 * 1024 * 1024;

/// Largest model file an upload (`POST /v1/models/{name}/uploads`) takes.
pub const MAX_UPLOAD_BYTES: usize = 250 * 1024 * 1024;

/// How long an upload URL works.
const UPLOAD_VALID: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a sealed upload token says it is.
const MODEL_UPLOAD: &str = "model-upload";

/// Where a model file is uploaded before it is registered.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelUpload {
    /// Pass to `POST /v1/models/{name}/versions` once the file is uploaded.
    pub upload_id: String,
    /// PUT the file here (`Content-Type: application/octet-stream`, no other credentials):
    /// an S3 presigned URL in the aws shape, a signed URL of Wharf's own in the local one.
    pub upload_url: String,
    /// When the URL stops working.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: crate::Timestamp,
}

/// The object an upload lands in.
fn upload_key(vendor: &VendorId, upload_id: &str) -> String {
    format!("uploads/{vendor}/{upload_id}.onnx")
}

/// A model as `GET /v1/models` lists it: its name, how many versions it has, its latest.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelSummary {
    /// The model's name.
    pub name: String,
    /// Versions stored.
    pub versions: usize,
    /// The newest version.
    pub latest: ModelVersion,
}

impl Services {
    /// Registers `bytes` as the next version of the vendor's model `name`: loaded and checked
    /// by the engine first (a 422 saying what is wrong, and nothing stored), then the file in
    /// the object store, then the version.
    #[tracing::instrument(level = "debug", skip_all, fields(model.name = %name))]
    pub async fn register_model(
        &self,
        who: &Principal,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<ModelVersion, CoreError> {
        let vendor = who.tenant_with(Role::VendorAdmin)?.clone();
        self.register(&vendor, name, bytes, MAX_MODEL_BYTES).await
    }

    /// Checks and registers `bytes` (at most `most`) as the next version of `vendor`'s model
    /// `name`.
    async fn register(
        &self,
        vendor: &VendorId,
        name: &str,
        bytes: Vec<u8>,
        most: usize,
    ) -> Result<ModelVersion, CoreError> {
        let vendor = vendor.clone();
        if !is_slug(name) {
            return Err(CoreError::invalid("name", "must match [a-z0-9_-]{1,64}"));
        }
        if bytes.is_empty() || bytes.len() > most {
            return Err(CoreError::invalid(
                "",
                format!("a model file is 1 byte to {most} bytes"),
            ));
        }
        let bytes = Arc::new(bytes);
        let lane = crate::ports::tenant_lane(&vendor);
        let signature = self
            .models
            .inspect(self.compute.as_ref(), &lane, bytes.clone())
            .await?
            .map_err(|reason| CoreError::invalid("", reason))?;
        let sha256 = crate::credentials::sha256_hex(bytes.as_slice());
        let mut model = ModelVersion {
            id: ModelId::new(),
            vendor_id: vendor.clone(),
            name: name.to_owned(),
            version: 0,
            sha256,
            size: bytes.len() as u64,
            format: "onnx".into(),
            inputs: signature.inputs,
            outputs: signature.outputs,
            created_at: self.clock.now(),
        };
        // The file first: a version is never stored without its file.
        let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| (*shared).clone());
        self.models
            .objects()
            .put(&model.object_key(), bytes)
            .await?;
        // Two uploads racing for the same next version: the loser takes the one after.
        for _ in 0..5 {
            let versions = self.store.model_versions(&vendor, name).await?;
            model.version = versions.last().map_or(1, |v| v.version + 1);
            match self.store.put_model_version(&model).await {
                Err(CoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
                Ok(()) => {
                    tracing::info!(tenant.id = %vendor, model.name = %name, model.version = model.version, "model registered");
                    return Ok(model);
                }
            }
        }
        Err(CoreError::unavailable(
            "the model's versions kept changing; retry",
        ))
    }

    /// Starts an upload of a large model file: where to PUT it, until when.
    pub async fn start_model_upload(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<ModelUpload, CoreError> {
        let vendor = who.tenant_with(Role::VendorAdmin)?;
        if !is_slug(name) {
            return Err(CoreError::invalid("name", "must match [a-z0-9_-]{1,64}"));
        }
        let upload_id = format!("upl_{}", uuid::Uuid::now_v7().simple());
        let expires_at = self.clock.now() + UPLOAD_VALID;
        let key = upload_key(vendor, &upload_id);
        let upload_url = match self
            .models
            .objects()
            .presign_put(&key, UPLOAD_VALID)
            .await?
        {
            Some(url) => url,
            None => {
                let token = self.seal_token(&[
                    MODEL_UPLOAD,
                    vendor.as_str(),
                    &upload_id,
                    &expires_at.unix_timestamp().to_string(),
                ])?;
                let base = self.settings.public_url.trim_end_matches('/');
                format!("{base}/v1/model-uploads/{token}")
            }
        };
        Ok(ModelUpload {
            upload_id,
            upload_url,
            expires_at,
        })
    }

    /// Stores the file PUT to an upload URL of Wharf's own (the local shape's): a token that
    /// is not one is a 404, an expired one a 410.
    pub async fn receive_model_upload(&self, token: &str, bytes: Vec<u8>) -> Result<(), CoreError> {
        let parts = self.open_token(token, MODEL_UPLOAD, "upload")?;
        let [vendor, upload_id, expires] = parts.as_slice() else {
            return Err(CoreError::NotFound("upload"));
        };
        if self.expired(expires)? {
            return Err(CoreError::Gone(
                "this upload URL has expired; start another".into(),
            ));
        }
        if bytes.is_empty() || bytes.len() > MAX_UPLOAD_BYTES {
            return Err(CoreError::invalid(
                "",
                format!("a model file is 1 byte to {MAX_UPLOAD_BYTES} bytes"),
            ));
        }
        let vendor = VendorId::parse(vendor).map_err(|_| CoreError::NotFound("upload"))?;
        self.models
            .objects()
            .put(&upload_key(&vendor, upload_id), bytes)
            .await
    }

    /// Checks and registers an uploaded file as the next version of the model `name`; the
    /// upload is consumed.
    pub async fn register_uploaded_model(
        &self,
        who: &Principal,
        name: &str,
        upload_id: &str,
    ) -> Result<ModelVersion, CoreError> {
        let vendor = who.tenant_with(Role::VendorAdmin)?;
        let nothing = || {
            CoreError::invalid(
                "upload_id",
                "nothing was uploaded under this id (or it was registered already)",
            )
        };
        let well_formed = upload_id.len() == 36
            && upload_id.starts_with("upl_")
            && upload_id[4..].bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(nothing());
        }
        let key = upload_key(vendor, upload_id);
        let bytes = match self.models.objects().get(&key).await {
            Ok(bytes) => bytes,
            Err(CoreError::NotFound(_)) => return Err(nothing()),
            Err(e) => return Err(e),
        };
        let model = self.register(vendor, name, bytes, MAX_UPLOAD_BYTES).await?;
        self.models.objects().delete(&key).await?;
        Ok(model)
    }

    /// The vendor's models, by name, each with its latest version.
    pub async fn list_models(&self, who: &Principal) -> Result<Vec<ModelSummary>, CoreError> {
        let vendor = who.tenant_with(Role::VendorAdmin)?;
        let mut summaries: Vec<ModelSummary> = Vec::new();
        for version in self.store.all_model_versions(vendor).await? {
            match summaries.last_mut() {
                Some(s) if s.name == version.name => {
                    s.versions += 1;
                    s.latest = version;
                }
                _ => summaries.push(ModelSummary {
                    name: version.name.clone(),
                    versions: 1,
                    latest: version,
                }),
            }
        }
        Ok(summaries)
    }

    /// The versions of the vendor's model `name`, oldest first; `NotFound` when it has none.
    pub async fn model_versions(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<Vec<ModelVersion>, CoreError> {
        let vendor = who.tenant_with(Role::VendorAdmin)?;
        let versions = self.store.model_versions(vendor, name).await?;
        if versions.is_empty() {
            return Err(CoreError::NotFound("model"));
        }
        Ok(versions)
    }

    /// Deletes one version, unless a feed's pipeline uses it (409); its file goes with it
    /// unless another version holds the same file.
    pub async fn delete_model_version(
        &self,
        who: &Principal,
        name: &str,
        version: u32,
    ) -> Result<(), CoreError> {
        let vendor = who.tenant_with(Role::VendorAdmin)?;
        let versions = self.store.model_versions(vendor, name).await?;
        let Some(gone) = versions.iter().find(|v| v.version == version) else {
            return Err(CoreError::NotFound("model version"));
        };
        if let Some(feed) = self.feed_using_model(vendor, name, version).await? {
            return Err(CoreError::Conflict(format!(
                "the pipeline of feed {feed} uses version {version} of model `{name}`; change it first"
            )));
        }
        self.store
            .delete_model_version(vendor, name, version)
            .await?;
        self.models.forget_version(vendor, name, version);
        let shared = self
            .store
            .all_model_versions(vendor)
            .await?
            .iter()
            .any(|v| v.sha256 == gone.sha256);
        if !shared {
            self.models.objects().delete(&gone.object_key()).await?;
        }
        Ok(())
    }

    /// A feed of `vendor` (not archived) whose pipeline uses `name` at `version`.
    async fn feed_using_model(
        &self,
        vendor: &VendorId,
        name: &str,
        version: u32,
    ) -> Result<Option<crate::FeedId>, CoreError> {
        let mut page = crate::PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let feeds = self.store.list_feeds(vendor, &page).await?;
            for feed in feeds.items {
                let uses = feed.status != FeedStatus::Archived
                    && feed.pipeline.rules.iter().any(|r| {
                        matches!(r, Rule::Model { model: Some(model), version: Some(v), .. }
                            if model == name && *v == version)
                    });
                if uses {
                    return Ok(Some(feed.id));
                }
            }
            match feeds.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(None),
            }
        }
    }
}

impl Services {
    /// Pins each model rule of `rules` to a version of the vendor's model (the latest when the
    /// rule names none) and checks it against that version: every input the model takes is
    /// given, and no other; each input takes rows of a fixed width; the outputs the
    /// expressions read (`outputs.name`) are the model's. Problems go to `p` at
    /// `{prefix}rules[i]…`.
    pub(super) async fn check_model_rules(
        &self,
        vendor: &VendorId,
        prefix: &str,
        rules: &mut [Rule],
        p: &mut crate::error::Problems,
    ) -> Result<(), CoreError> {
        for (i, rule) in rules.iter_mut().enumerate() {
            let Rule::Model {
                model,
                version,
                endpoint,
                inputs,
                outputs,
            } = rule
            else {
                continue;
            };
            let at = |field: &str| format!("{prefix}rules[{i}].{field}");
            if let Some(endpoint) = endpoint {
                self.check_endpoint(endpoint, &at("endpoint."), p).await?;
                continue;
            }
            let Some(model) = model else {
                continue;
            };
            let versions = self.store.model_versions(vendor, model).await?;
            let found = match *version {
                None => versions.last(),
                Some(v) => versions.iter().find(|m| m.version == v),
            };
            let Some(found) = found else {
                match versions.is_empty() {
                    true => p.add(at("model"), "you have no model of this name"),
                    false => p.add(
                        at("version"),
                        format!("model `{model}` has no such version"),
                    ),
                }
                continue;
            };
            *version = Some(found.version);
            for input in &found.inputs {
                if !inputs.contains_key(&input.name) {
                    p.add(
                        at("inputs"),
                        format!("needs the model's input `{}`", input.name),
                    );
                } else if input.row_width().is_none() {
                    p.add(
                        at(&format!("inputs.{}", input.name)),
                        "the input leaves a dimension after the first open: rows cannot fill it",
                    );
                }
            }
            for name in inputs.keys() {
                if !found.inputs.iter().any(|t| &t.name == name) {
                    p.add(at(&format!("inputs.{name}")), "the model has no such input");
                }
            }
            for (field, expr) in outputs.iter() {
                for used in read_outputs(expr.source()) {
                    if !found.outputs.iter().any(|t| t.name == used) {
                        p.add(
                            at(&format!("outputs.{field}")),
                            format!("the model has no output `{used}`"),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

impl Services {
    /// Checks a remote model's host with the webhooks' address guard, seals the secret sent
    /// with it, and checks that a sealed one sent back is one this server sealed.
    async fn check_endpoint(
        &self,
        endpoint: &mut Endpoint,
        prefix: &str,
        p: &mut crate::error::Problems,
    ) -> Result<(), CoreError> {
        if let Err(e) = self.check_webhook_host(endpoint.url.url()).await {
            p.add(format!("{prefix}url"), e);
        }
        if let Some(secret) = endpoint.secret_sent.take() {
            endpoint.secret_sealed = Some(self.secrets.seal(&secret)?);
        } else if let Some(sealed) = &endpoint.secret_sealed
            && self.secrets.open(sealed).is_err()
        {
            p.add(
                format!("{prefix}secret_sealed"),
                "is not a secret this server sealed; send the `secret` itself",
            );
        }
        Ok(())
    }
}

/// The names an expression reads as `outputs.name` or `outputs["name"]`.
fn read_outputs(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("outputs") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "outputs".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let name: String = if let Some(field) = rest.strip_prefix('.') {
            field
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        } else if let Some(quoted) = rest.strip_prefix("[\"").or_else(|| rest.strip_prefix("['")) {
            quoted
                .chars()
                .take_while(|c| *c != '"' && *c != '\'')
                .collect()
        } else {
            continue;
        };
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_outputs_an_expression_reads_are_found_in_either_form() {
        assert_eq!(
            super::read_outputs("outputs.y[0] * 2.0 + outputs['probabilities'][1]"),
            ["y", "probabilities"]
        );
        assert_eq!(
            super::read_outputs("record.outputs.y + my_outputs.z"),
            Vec::<String>::new()
        );
    }
}
