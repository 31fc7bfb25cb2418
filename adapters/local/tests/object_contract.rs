//! The object store contract on files in a temporary directory.

use wharf_local::FsObjects;

/// Files in a directory of their own, removed with it.
struct Fresh {
    objects: FsObjects,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Fresh {
    type Target = FsObjects;
    fn deref(&self) -> &FsObjects {
        &self.objects
    }
}

async fn fresh_objects() -> Fresh {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = FsObjects::open(&dir.path().join("objects")).expect("open");
    Fresh { objects, _dir: dir }
}

wharf_contract::object_contract!(fresh_objects());

#[tokio::test]
async fn nothing_is_written_outside_the_object_directory() {
    use wharf_core::ports::ObjectStore;
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = FsObjects::open(&dir.path().join("objects")).expect("open");
    objects.put("t/a/b.onnx", b"m".to_vec()).await.expect("put");
    for bad in ["../escape", "/abs", "a/../../b"] {
        assert!(objects.put(bad, b"x".to_vec()).await.is_err(), "{bad}");
    }
    let mut top: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    top.sort();
    assert_eq!(top, ["objects"]);
}

#[tokio::test]
async fn a_key_that_is_also_a_path_of_other_keys_is_a_conflict() {
    use wharf_core::CoreError;
    use wharf_core::ports::ObjectStore;
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = FsObjects::open(dir.path()).expect("open");
    objects.put("t/a", b"1".to_vec()).await.expect("put");
    assert!(matches!(
        objects.put("t/a/b", b"2".to_vec()).await,
        Err(CoreError::Conflict(_))
    ));
    objects.put("t/c/d", b"3".to_vec()).await.expect("put");
    assert!(matches!(
        objects.put("t/c", b"4".to_vec()).await,
        Err(CoreError::Conflict(_))
    ));
    assert_eq!(objects.list("t/").await.expect("list"), ["t/a", "t/c/d"]);
}
