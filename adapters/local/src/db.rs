//! The SQLite handle shared by the local adapters.
//!
//! One writer connection behind a mutex serialises all writes (SQLite allows one writer at a
//! time anyway, and queueing in-process is cheaper than spinning on `SQLITE_BUSY`); readers
//! come from a small pool and run concurrently with it thanks to WAL mode. All work runs on
//! tokio's blocking pool, so async callers never block a runtime thread on disk I/O. A thread
//! of its own checkpoints the write-ahead log, so the writer does not.
//!
//! The schema is embedded and migrated at open: `PRAGMA user_version` counts the applied
//! migrations, each applied in its own transaction.

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use wharf_core::CoreError;

/// The schema migrations, in order. Never edit one that has shipped; append a new one.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_pipeline.sql"),
    include_str!("../migrations/0003_raw_dedup_key.sql"),
    include_str!("../migrations/0004_billing.sql"),
    include_str!("../migrations/0005_payment_customers.sql"),
    include_str!("../migrations/0006_billed_by_period.sql"),
    include_str!("../migrations/0007_pending_positions.sql"),
    include_str!("../migrations/0008_raw_by_tenant.sql"),
    include_str!("../migrations/0009_refresh_families.sql"),
    include_str!("../migrations/0010_payment_methods.sql"),
    include_str!("../migrations/0011_payout_accounts.sql"),
    include_str!("../migrations/0012_backfill_usage.sql"),
    include_str!("../migrations/0013_models.sql"),
];

/// Reader connections kept open between reads; more are opened under load and then closed.
const MAX_IDLE_READERS: usize = 8;
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
const STATEMENT_CACHE: usize = 64;
/// WAL pages after which the writer checkpoints on its own: a safety valve for when the
/// checkpointer thread cannot keep up or never finds the log fully copied (see `Checkpointer`).
const WRITER_CHECKPOINT_PAGES: u32 = 4000;

/// How hard commits insist on reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: in WAL mode a power loss may drop the last commits, never corrupt.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is on disk before it returns.
    Full,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// A handle to one SQLite database. Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    checkpointer: Arc<Checkpointer>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.checkpointer.stop();
    }
}

/// Copies committed WAL pages into the database file on a thread of its own, so the writer,
/// through which every write in the process passes, does not spend its time on it. SQLite's
/// automatic checkpoint runs inside the commit that crosses its threshold; under ingest that
/// was a third of the writer's time. The checkpoint is PASSIVE: it never blocks the writer or
/// readers. Under a steady stream of commits it may never find the log fully copied, and the
/// log restarts only then, so the writer keeps its own automatic checkpoint at a higher
/// threshold: by the time it fires, nearly every page is already copied.
#[derive(Default)]
struct Checkpointer {
    state: Mutex<CheckpointState>,
    wake: Condvar,
}

#[derive(Default)]
struct CheckpointState {
    committed: bool,
    stopped: bool,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Arc<Checkpointer>, CoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_error)?;
        configure(&conn)?;
        let checkpointer = Arc::new(Checkpointer::default());
        let shared = checkpointer.clone();
        std::thread::Builder::new()
            .name("wharf-checkpoint".into())
            .spawn(move || shared.run(&conn))
            .map_err(CoreError::internal)?;
        Ok(checkpointer)
    }

    fn run(&self, conn: &Connection) {
        loop {
            {
                let mut state = relock(&self.state);
                while !state.committed && !state.stopped {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if state.stopped {
                    return;
                }
                state.committed = false;
            }
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "checkpointing the write-ahead log failed");
            }
        }
    }

    fn committed(&self) {
        relock(&self.state).committed = true;
        self.wake.notify_one();
    }

    fn stop(&self) {
        relock(&self.state).stopped = true;
        self.wake.notify_one();
    }
}

/// Creates the database file readable and writable by its owner only, or narrows an existing
/// one to that. SQLite gives the `-wal` and `-shm` files it creates the database file's mode.
fn owner_only(path: &Path) -> Result<(), CoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(CoreError::internal)?;
    for file in [
        path.to_owned(),
        wal_sibling(path, "-wal"),
        wal_sibling(path, "-shm"),
    ] {
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CoreError::internal(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `path` with `suffix` after its file name (`wharf.db` → `wharf.db-wal`).
fn wal_sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    /// Blocks while doing so; call it at start-up.
    pub fn open(path: &Path, durability: Durability) -> Result<Db, CoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::create_private_dir(dir).map_err(CoreError::internal)?;
        }
        owner_only(path)?;
        let mut writer = Connection::open(path).map_err(sql_error)?;
        configure(&writer)?;
        // journal_mode answers with a row, so it cannot go through execute_batch.
        let mode: String = writer
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(sql_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CoreError::internal(format!(
                "{} cannot use WAL journaling (got `{mode}`)",
                path.display()
            )));
        }
        writer
            .execute_batch(&format!("PRAGMA synchronous={};", durability.pragma()))
            .map_err(sql_error)?;
        migrate(&mut writer)?;
        writer
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES};"
            ))
            .map_err(sql_error)?;
        let db = Db {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                checkpointer: Checkpointer::start(path)?,
            }),
        };
        // Fail at start, not on the first request, if readers cannot open the file.
        db.give_back(db.take_reader()?);
        Ok(db)
    }

    /// Runs a short read (a point lookup, a page of a list) on a reader connection, right on
    /// the calling task: in WAL mode a reader never waits for the writer, and such reads take
    /// microseconds, less than handing them to the blocking pool and back. Profiling the
    /// authenticated GET showed that hand-off costing more than the query itself.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        self.read_blocking(f)
    }

    /// Runs a read that may scan many rows (hundreds of records) on a reader connection, off
    /// the async runtime.
    pub async fn read_large<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.read_blocking(f))
            .await
            .map_err(CoreError::internal)?
    }

    /// Runs `f` in an IMMEDIATE transaction on the writer connection, off the async runtime:
    /// committed when `f` returns `Ok`, rolled back when it returns `Err`.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_blocking(f))
            .await
            .map_err(CoreError::internal)?
    }

    /// Writes `rows` in transactions of at most `per_transaction` rows each, `f` writing one
    /// chunk; answers the sum of what `f` answered. A bulk write (a tenant with hundreds of
    /// feeds makes tens of thousands of outputs or errors from one batch) would otherwise
    /// hold the one writer from every other tenant for as long as it takes; between chunks,
    /// other writers take their turn. Chunks committed before a failure stay committed: for
    /// callers whose rows are skipped when written again, or who accept them twice.
    pub async fn write_chunks<R: Send + 'static>(
        &self,
        rows: Vec<R>,
        per_transaction: usize,
        f: impl Fn(&Transaction, &[R]) -> Result<usize, CoreError> + Send + Sync + 'static,
    ) -> Result<usize, CoreError> {
        let f = Arc::new(f);
        let mut written = 0;
        let mut rows = rows.into_iter();
        loop {
            let chunk: Vec<R> = rows.by_ref().take(per_transaction.max(1)).collect();
            if chunk.is_empty() {
                return Ok(written);
            }
            let f = f.clone();
            written += self.write(move |tx| f(tx, &chunk)).await?;
        }
    }

    /// Checks that the database answers a query.
    pub fn ping(&self) -> Result<(), CoreError> {
        self.read_blocking(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(sql_error)
                .map(|_| ())
        })
    }

    /// The number of migrations applied to the database.
    pub fn schema_version(&self) -> Result<usize, CoreError> {
        self.read_blocking(user_version)
    }

    fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        let conn = self.take_reader()?;
        let out = f(&conn);
        self.give_back(conn);
        out
    }

    fn write_blocking<T>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        let mut conn = relock(&self.inner.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        match f(&tx) {
            Ok(out) => {
                tx.commit().map_err(sql_error)?;
                self.inner.checkpointer.committed();
                Ok(out)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback() {
                    tracing::warn!(error = %rollback, "rolling back a failed write failed");
                }
                Err(e)
            }
        }
    }

    fn take_reader(&self) -> Result<Connection, CoreError> {
        if let Some(conn) = relock(&self.inner.readers).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_error)?;
        configure(&conn)?;
        // Read-write rather than read-only so the connection can recover the WAL index, but
        // refusing writes: every write must go through the writer's transaction.
        conn.execute_batch("PRAGMA query_only=ON;")
            .map_err(sql_error)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = relock(&self.inner.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// Maps a rusqlite error to its meaning: a uniqueness violation is a `Conflict`, a busy or
/// locked database is `Unavailable` (retrying may succeed), anything else is `Internal`.
pub fn sql_error(e: rusqlite::Error) -> CoreError {
    let rusqlite::Error::SqliteFailure(failure, message) = &e else {
        return CoreError::internal(e);
    };
    match failure.code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => CoreError::unavailable(e),
        ErrorCode::ConstraintViolation
            if matches!(
                failure.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            // SQLite says "UNIQUE constraint failed: users.email"; keep the column names.
            let columns = message
                .as_deref()
                .and_then(|m| m.split_once(": "))
                .map_or("key", |(_, cols)| cols);
            CoreError::Conflict(format!("an entry with this {columns} already exists"))
        }
        _ => CoreError::internal(e),
    }
}

/// Locks `m` even if a thread panicked while holding it. That is safe here: a panic inside a
/// write drops its `Transaction`, which rolls back, so the connection is left consistent.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn configure(conn: &Connection) -> Result<(), CoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch("PRAGMA foreign_keys=ON;")
        .map_err(sql_error)
}

fn user_version(conn: &Connection) -> Result<usize, CoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_error)?;
    usize::try_from(version).map_err(CoreError::internal)
}

/// Applies the migrations the database lacks. The version is read inside each IMMEDIATE
/// transaction, so two processes opening a fresh data dir at once cannot both apply one.
fn migrate(conn: &mut Connection) -> Result<(), CoreError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let applied = user_version(&tx)?;
        let Some(sql) = MIGRATIONS.get(applied) else {
            if applied > MIGRATIONS.len() {
                return Err(CoreError::internal(format!(
                    "the database schema is at version {applied}, newer than this build's {}",
                    MIGRATIONS.len()
                )));
            }
            return Ok(());
        };
        tx.execute_batch(sql).map_err(sql_error)?;
        tx.pragma_update(None, "user_version", applied + 1)
            .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        tracing::info!(version = applied + 1, "applied a database migration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit far below the writer's own checkpoint threshold still reaches the database
    /// file: the checkpointer thread copies it there.
    #[tokio::test]
    async fn committed_pages_are_checkpointed_off_the_writer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wharf.db");
        let db = Db::open(&path, Durability::Normal).expect("open");
        let before = std::fs::metadata(&path).expect("db file").len();
        db.write(|tx| {
            tx.execute_batch("CREATE TABLE blobs (b BLOB NOT NULL)")
                .map_err(sql_error)?;
            tx.execute("INSERT INTO blobs (b) VALUES (zeroblob(1048576))", [])
                .map_err(sql_error)
        })
        .await
        .expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut after = before;
        while after < before + 1_048_576 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            after = std::fs::metadata(&path).expect("db file").len();
        }
        assert!(
            after >= before + 1_048_576,
            "the database file grew from {before} to only {after} bytes"
        );
    }

    /// Migration 3 rebuilds `raw_records`: rows, positions and the sequence past a deleted
    /// newest position all survive, and the vendor's id becomes the dedup key.
    #[test]
    fn the_raw_dedup_migration_keeps_records_positions_and_sequence() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wharf.db");
        {
            let mut conn = Connection::open(&path).expect("open");
            let tx = conn.transaction().expect("tx");
            tx.execute_batch(MIGRATIONS[0]).expect("0001");
            tx.execute_batch(MIGRATIONS[1]).expect("0002");
            tx.pragma_update(None, "user_version", 2).expect("version");
            for (position, id, external) in
                [(1, "rec_a", "a"), (2, "rec_b", "b"), (3, "rec_c", "c")]
            {
                tx.execute(
                    "INSERT INTO raw_records (position, id, tenant_id, source_id, external_id, ts,
                         received_at, expires_at, data) VALUES (?, ?, 'ven_1', 'src_1', ?, 1, 1, 9, '{}')",
                    rusqlite::params![position, id, external],
                )
                .expect("insert");
            }
            tx.execute("DELETE FROM raw_records WHERE position = 3", [])
                .expect("delete");
            tx.commit().expect("commit");
        }
        let db = Db::open(&path, Durability::Normal).expect("migrated");
        assert_eq!(db.schema_version().expect("version"), MIGRATIONS.len());
        let conn = relock(&db.inner.writer);
        let kept: Vec<(i64, String)> = conn
            .prepare("SELECT position, id FROM raw_records ORDER BY position")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .expect("rows");
        assert_eq!(kept, vec![(1, "rec_a".into()), (2, "rec_b".into())]);
        let insert = "INSERT INTO raw_records (id, tenant_id, source_id, external_id, ts,
                          received_at, expires_at, data) VALUES (?, 'ven_1', 'src_1', ?, 1, 1, 9, '{}')
                      ON CONFLICT (source_id, external_id) DO NOTHING";
        assert_eq!(conn.execute(insert, ["rec_d", "d"]).expect("new"), 1);
        assert_eq!(conn.execute(insert, ["rec_x", "a"]).expect("dup"), 0);
        let newest: i64 = conn
            .query_row("SELECT MAX(position) FROM raw_records", [], |r| r.get(0))
            .expect("max");
        assert_eq!(
            newest, 4,
            "position 3 was handed out once and is never reused"
        );
    }
}
