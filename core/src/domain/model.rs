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
