//! Blobs by key (`ObjectStore`). Each check works under a fresh random root, so checks can
//! share one bucket or directory.

use crate::support::*;
use wharf_core::ports::{MAX_OBJECT_KEY, ObjectStore};

/// A fresh root, and a key under it.
fn root() -> String {
    format!("contract-{}", nonce())
}

/// Objects read back byte for byte (bytes that are not UTF-8, and an empty object), and a
/// put under an existing key replaces it.
pub async fn objects_round_trip_and_a_put_replaces(objects: &dyn ObjectStore) {
    let root = root();
    let model: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let key = format!("{root}/t1/models/m.onnx");
    objects.put(&key, model.clone()).await.unwrap();
    assert_eq!(objects.get(&key).await.unwrap(), model);
    objects
        .put(&format!("{root}/t1/empty"), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        objects.get(&format!("{root}/t1/empty")).await.unwrap(),
        Vec::<u8>::new()
    );
    objects.put(&key, b"v2".to_vec()).await.unwrap();
    assert_eq!(objects.get(&key).await.unwrap(), b"v2");
}

/// A missing object is `NotFound`, also where other keys make a "directory" of its path.
pub async fn missing_objects_are_not_found(objects: &dyn ObjectStore) {
    let root = root();
    objects
        .put(&format!("{root}/t1/models/m.onnx"), b"m".to_vec())
        .await
        .unwrap();
    for missing in ["t1/models/other.onnx", "t1/models"] {
        assert!(
            matches!(
                objects.get(&format!("{root}/{missing}")).await,
                Err(CoreError::NotFound(_))
            ),
            "{missing}"
        );
    }
}

/// Listing is sorted, covers only the prefix (a sibling with the same start is left out),
/// and the empty prefix lists everything.
pub async fn listing_is_sorted_and_keeps_to_its_prefix(objects: &dyn ObjectStore) {
    let root = root();
    let key = |k: &str| format!("{root}/{k}");
    for k in [
        "t1/models/m.onnx",
        "t1/empty",
        "t1/exports/2031-01.csv",
        "t10/exports/2031-01.csv",
    ] {
        objects.put(&key(k), b"x".to_vec()).await.unwrap();
    }
    assert_eq!(
        objects.list(&format!("{root}/t1/")).await.unwrap(),
        vec![
            key("t1/empty"),
            key("t1/exports/2031-01.csv"),
            key("t1/models/m.onnx")
        ]
    );
    assert_eq!(
        objects.list(&format!("{root}/t1/exports/")).await.unwrap(),
        vec![key("t1/exports/2031-01.csv")]
    );
    assert_eq!(
        objects.list(&format!("{root}/nobody/")).await.unwrap(),
        Vec::<String>::new()
    );
    let all = objects.list("").await.unwrap();
    assert!(all.contains(&key("t10/exports/2031-01.csv")));
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted: {all:?}");
}

/// Deleting removes the object; deleting it again is not an error.
pub async fn a_deleted_object_is_gone_and_deleting_twice_is_fine(objects: &dyn ObjectStore) {
    let root = root();
    let (doomed, kept) = (format!("{root}/t1/m.onnx"), format!("{root}/t1/kept"));
    objects.put(&doomed, b"m".to_vec()).await.unwrap();
    objects.put(&kept, b"k".to_vec()).await.unwrap();
    objects.delete(&doomed).await.unwrap();
    objects.delete(&doomed).await.unwrap();
    assert!(matches!(
        objects.get(&doomed).await,
        Err(CoreError::NotFound(_))
    ));
    assert_eq!(
        objects.list(&format!("{root}/t1/")).await.unwrap(),
        vec![kept]
    );
}

/// Keys that could escape the object directory or are ambiguous are refused, and nothing is
/// written under them.
pub async fn keys_that_could_escape_are_refused(objects: &dyn ObjectStore) {
    let root = root();
    objects
        .put(&format!("{root}/ok"), b"x".to_vec())
        .await
        .unwrap();
    let too_long = format!("{root}/{}", "a".repeat(MAX_OBJECT_KEY));
    for bad in [
        "",
        "/abs",
        "a//b",
        "a/../b",
        "../b",
        "a/./b",
        "a/",
        "a b",
        "a\\b",
        too_long.as_str(),
    ] {
        assert!(
            matches!(
                objects.put(bad, b"x".to_vec()).await,
                Err(CoreError::Validation(_))
            ),
            "put {bad:?}"
        );
        assert!(
            matches!(objects.get(bad).await, Err(CoreError::Validation(_))),
            "get {bad:?}"
        );
    }
    for bad in ["../", root.as_str()] {
        assert!(
            matches!(objects.list(bad).await, Err(CoreError::Validation(_))),
            "list {bad:?}"
        );
    }
    assert_eq!(
        objects.list(&format!("{root}/")).await.unwrap(),
        vec![format!("{root}/ok")],
        "no bad key was stored"
    );
}
