//! Models: ONNX files a vendor registers by name, each upload an immutable version.

use crate::{ModelId, Timestamp, VendorId};
use serde::{Deserialize, Serialize};

/// One dimension of a model's tensor: a size, or the name of one the model leaves open (such
/// as the batch size). An open dimension without a name is `null` in a shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Dim {
    /// A fixed size.
    Size(u64),
    /// An open dimension's name.
    Named(String),
}

/// An input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TensorInfo {
    /// Its name in the model.
    pub name: String,
    /// Element type: `float32`, `float64`, `int64`, `int32`, …
    pub dtype: String,
    /// Its dimensions (`null`: open, unnamed).
    pub shape: Vec<Option<Dim>>,
}

impl TensorInfo {
    /// Values per row: the product of the dimensions after the first (the batch), when they
    /// are all fixed.
    pub fn row_width(&self) -> Option<usize> {
        self.shape
            .iter()
            .skip(1)
            .map(|d| match d {
                Some(Dim::Size(n)) => usize::try_from(*n).ok(),
                _ => None,
            })
            .try_fold(1usize, |acc, n| n.and_then(|n| acc.checked_mul(n)))
    }
}

/// One version of a registered model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelVersion {
    /// The version's id.
    pub id: ModelId,
    /// The vendor owning it.
    pub vendor_id: VendorId,
    /// The model's name (`[a-z0-9_-]`).
    pub name: String,
    /// 1 for the first upload of the name, one more for each after.
    pub version: u32,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// `onnx`.
    pub format: String,
    /// The model's inputs.
    pub inputs: Vec<TensorInfo>,
    /// The model's outputs.
    pub outputs: Vec<TensorInfo>,
    /// When it was uploaded.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

impl ModelVersion {
    /// Where the file lives in the object store: content-addressed within the vendor.
    pub fn object_key(&self) -> String {
        format!("models/{}/{}.onnx", self.vendor_id, self.sha256)
    }
}

/// How a remote model is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Protocol {
    /// The Open Inference Protocol's REST form (KServe v2, Triton): `{"inputs": [{name, shape,
    /// datatype, data}]}` → `{"outputs": [{name, shape, datatype, data}]}`.
    #[serde(rename = "open-inference")]
    OpenInference,
    /// `{"instances": [...]}` → `{"predictions": [...]}` (SageMaker, TensorFlow Serving).
    #[serde(rename = "json")]
    Json,
}

/// Longest a remote model may take to answer.
pub const MAX_ENDPOINT_TIMEOUT_MS: u32 = 30_000;
/// Most rows sent to a remote model at once.
pub const MAX_ENDPOINT_BATCH: u32 = 1000;

/// A remote model as a `model` rule names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointSpec {
    /// http or https URL of a public host (the address guard of webhooks applies).
    pub url: String,
    /// `open-inference` or `json`.
    pub protocol: Protocol,
    /// Header that carries `secret` (for example `x-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Sent in `header`; sealed at rest and never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A secret as a saved pipeline shows it (sealed), to keep it when the rule is sent back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sealed: Option<String>,
    /// Time an answer may take, in ms (default 2000, at most 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Most rows per request (default 64, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
}

/// A remote model as a saved pipeline holds it: its secret sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Where the rows are POSTed.
    pub url: super::WebhookUrl,
    /// How.
    pub protocol: Protocol,
    /// The header carrying the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The secret, sealed by the server's key (only the server can open it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sealed: Option<String>,
    /// The secret as sent, until the service seals it; never stored or shown.
    #[serde(skip)]
    pub secret_sent: Option<String>,
    /// Time an answer may take, in ms.
    pub timeout_ms: u32,
    /// Most rows per request.
    pub max_batch: u32,
}

impl EndpointSpec {
    /// The endpoint, or what is wrong at `at.field` (the secret not sealed yet).
    pub fn parse(
        &self,
        at: &dyn Fn(&str) -> String,
        p: &mut crate::error::Problems,
    ) -> Option<Endpoint> {
        let url = super::WebhookUrl::parse(&self.url)
            .map_err(|e| p.add(at("url"), e))
            .ok();
        let header_ok = |h: &str| {
            !h.is_empty()
                && h.len() <= 64
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        match (
            &self.header,
            self.secret.is_some() || self.secret_sealed.is_some(),
        ) {
            (Some(h), true) if header_ok(h) => {}
            (Some(_), true) => p.add(
                at("header"),
                "must be a header name: letters, digits and `-`",
            ),
            (Some(_), false) => p.add(at("secret"), "a header needs its secret"),
            (None, true) => p.add(at("header"), "a secret needs the header that carries it"),
            (None, false) => {}
        }
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 4096)
        {
            p.add(at("secret"), "must be 1 to 4096 characters");
        }
        let timeout_ms = self.timeout_ms.unwrap_or(2000);
        if !(1..=MAX_ENDPOINT_TIMEOUT_MS).contains(&timeout_ms) {
            p.add(
                at("timeout_ms"),
                format!("must be 1 to {MAX_ENDPOINT_TIMEOUT_MS}"),
            );
        }
        let max_batch = self.max_batch.unwrap_or(64);
        if !(1..=MAX_ENDPOINT_BATCH).contains(&max_batch) {
            p.add(
                at("max_batch"),
                format!("must be 1 to {MAX_ENDPOINT_BATCH}"),
            );
        }
        Some(Endpoint {
            url: url?,
            protocol: self.protocol,
            header: self.header.clone(),
            secret_sealed: self.secret_sealed.clone().filter(|_| self.secret.is_none()),
            secret_sent: self.secret.clone(),
            timeout_ms,
            max_batch,
        })
    }
}
