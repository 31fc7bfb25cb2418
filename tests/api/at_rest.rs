//! What the local shape leaves on disk (local only: the aws shape keeps nothing on disk).

use crate::helpers::*;

#[tokio::test]
async fn the_database_and_its_journal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    app.source(&token).await;
    for name in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        let mode = std::fs::metadata(app.dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is {:o}", mode & 0o777);
    }
    // So are the directories it makes inside the data dir (mail waiting in the outbox).
    let outbox = std::fs::metadata(app.dir.path().join("outbox")).unwrap();
    assert_eq!(outbox.permissions().mode() & 0o777, 0o700);
    // A data dir Wharf creates is its owner's alone.
    let dir = app.dir.path().join("nested").join("data");
    wharf_local::create_private_dir(&dir).unwrap();
    for d in [dir.parent().unwrap(), dir.as_path()] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{} is {:o}", d.display(), mode & 0o777);
    }
}
