//! The model registry (`ModelStore`).

use crate::support::*;
use wharf_core::ModelId;

fn version(vendor: &VendorId, name: &str, version: u32) -> ModelVersion {
    ModelVersion {
        id: ModelId::new(),
        vendor_id: vendor.clone(),
        name: name.into(),
        version,
        sha256: format!("{version:064}"),
        size: 140,
        format: "onnx".into(),
        inputs: vec![TensorInfo {
            name: "x".into(),
            dtype: "float32".into(),
            shape: vec![Some(Dim::Named("N".into())), Some(Dim::Size(3)), None],
        }],
        outputs: vec![],
        created_at: at(1),
    }
}

/// Versions read back equal, by name then version; another vendor sees none of them.
pub async fn model_versions_list_by_name_then_version_within_their_vendor(store: &dyn Store) {
    let vendor = VendorId::new();
    for (name, v) in [("lin", 2), ("alpha", 1), ("lin", 1)] {
        store
            .put_model_version(&version(&vendor, name, v))
            .await
            .unwrap();
    }
    let lin = store.model_versions(&vendor, "lin").await.unwrap();
    assert_eq!(lin.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(lin[0].inputs, version(&vendor, "lin", 1).inputs);
    let all = store.all_model_versions(&vendor).await.unwrap();
    let keys: Vec<(&str, u32)> = all.iter().map(|m| (m.name.as_str(), m.version)).collect();
    assert_eq!(keys, [("alpha", 1), ("lin", 1), ("lin", 2)]);
    let other = VendorId::new();
    assert!(
        store
            .model_versions(&other, "lin")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.all_model_versions(&other).await.unwrap().is_empty());
    // A name that starts another's is another model.
    assert!(
        store
            .model_versions(&vendor, "li")
            .await
            .unwrap()
            .is_empty()
    );
}

/// A version stored twice is a conflict; deleting takes one version, and another vendor's
/// or a missing one is not found.
pub async fn a_model_version_is_written_once_and_deleted_by_its_vendor(store: &dyn Store) {
    let vendor = VendorId::new();
    store
        .put_model_version(&version(&vendor, "lin", 1))
        .await
        .unwrap();
    store
        .put_model_version(&version(&vendor, "lin", 2))
        .await
        .unwrap();
    assert!(matches!(
        store.put_model_version(&version(&vendor, "lin", 1)).await,
        Err(CoreError::Conflict(_))
    ));
    assert_not_found(
        store.delete_model_version(&VendorId::new(), "lin", 1).await,
        "model version",
    );
    store.delete_model_version(&vendor, "lin", 1).await.unwrap();
    assert_not_found(
        store.delete_model_version(&vendor, "lin", 1).await,
        "model version",
    );
    let left = store.model_versions(&vendor, "lin").await.unwrap();
    assert_eq!(left.iter().map(|m| m.version).collect::<Vec<_>>(), [2]);
}
