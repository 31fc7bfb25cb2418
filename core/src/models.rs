//! Models ready to run: the engine, the object store their files live in, and the loaded
//! models kept by SHA-256 within a memory budget (least recently used first out). A model is
//! fetched and loaded on its first use and kept for the life of the process (a Lambda
//! execution environment, in the aws shape).

use crate::CoreError;
use crate::ports::{Compute, LoadedModel, ModelEngine, ObjectStore, Signature, off_runtime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a model version read from the registry is used without reading it again.
const VERSION_KEPT: Duration = Duration::from_secs(60);

/// A registered version and when it was read.
type KeptVersion = (Arc<crate::domain::ModelVersion>, Instant);

/// Largest answer a remote model may give.
pub const MAX_REMOTE_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// The waits before the second and third attempts at a request to a remote model.
pub const REMOTE_WAITS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

/// Requests in a row a remote model may fail before its breaker opens.
pub const BREAKER_FAILURES: u32 = 5;
/// How long an open breaker stays open (requests fail at once, without reaching the model).
pub const BREAKER_OPEN: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Default memory budget of loaded models.
pub const DEFAULT_BUDGET_BYTES: usize = 512 * 1024 * 1024;

/// How much memory a loaded model is taken to hold, per byte of its file: tract keeps the
/// weights and plans buffers beside them.
const LOADED_PER_FILE_BYTE: usize = 3;

struct Cached {
    model: Arc<dyn LoadedModel>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Loaded {
    by_sha: HashMap<String, Cached>,
    total: usize,
    clock: u64,
}

/// The engine, the files and the loaded models.
pub struct Models {
    engine: Arc<dyn ModelEngine>,
    objects: Arc<dyn ObjectStore>,
    budget: usize,
    loaded: Mutex<Loaded>,
    breakers: Mutex<HashMap<String, Breaker>>,
    versions: Mutex<HashMap<(crate::VendorId, String, u32), KeptVersion>>,
}

impl Models {
    /// Models run by `engine` from files in `objects`, keeping loaded ones within `budget`
    /// bytes.
    pub fn new(
        engine: Arc<dyn ModelEngine>,
        objects: Arc<dyn ObjectStore>,
        budget: usize,
    ) -> Models {
        Models {
            engine,
            objects,
            budget,
            loaded: Mutex::new(Loaded::default()),
            breakers: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The object store the files live in.
    pub fn objects(&self) -> &dyn ObjectStore {
        self.objects.as_ref()
    }

    /// Checks `bytes` as a model on a compute thread of `lane`: its signature, or what is
    /// wrong with it.
    pub async fn inspect(
        &self,
        compute: &dyn Compute,
        lane: &str,
        bytes: Arc<Vec<u8>>,
    ) -> Result<Result<Signature, String>, CoreError> {
        let engine = self.engine.clone();
        off_runtime(compute, lane, move || engine.inspect(&bytes)).await
    }

    /// The model whose file is under `key` with digest `sha256`, loaded on a compute thread
    /// of `lane` the first time.
    pub async fn get(
        &self,
        compute: &dyn Compute,
        lane: &str,
        key: &str,
        sha256: &str,
    ) -> Result<Arc<dyn LoadedModel>, CoreError> {
        if let Some(model) = self.cached(sha256) {
            return Ok(model);
        }
        let bytes = self.objects.get(key).await?;
        let size = bytes.len();
        let engine = self.engine.clone();
        let model = off_runtime(compute, lane, move || engine.load(&bytes))
            .await?
            .map_err(|e| CoreError::internal(format!("a registered model failed to load: {e}")))?;
        self.keep(
            sha256,
            model.clone(),
            size.saturating_mul(LOADED_PER_FILE_BYTE),
        );
        Ok(model)
    }

    /// Whether the remote model at `url` failed [`BREAKER_FAILURES`] requests in a row less
    /// than [`BREAKER_OPEN`] ago: it is not asked then, so it cannot hold its feed up.
    pub fn breaker_open(&self, url: &str) -> bool {
        let breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        breakers
            .get(url)
            .and_then(|b| b.open_until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Records how a request to the remote model at `url` ended.
    pub fn record_remote(&self, url: &str, ok: bool) {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let breaker = breakers.entry(url.to_owned()).or_default();
        if ok {
            *breaker = Breaker::default();
        } else {
            breaker.failures += 1;
            if breaker.failures >= BREAKER_FAILURES {
                breaker.open_until = Some(Instant::now() + BREAKER_OPEN);
                breaker.failures = 0;
            }
        }
    }

    /// The registered version `version` of `vendor`'s model `name`, as read from `store` at
    /// most [`VERSION_KEPT`] ago: a pipeline's batches do not each read the registry.
    /// `None` when there is no such version.
    pub async fn version(
        &self,
        store: &dyn crate::ports::ModelStore,
        vendor: &crate::VendorId,
        name: &str,
        version: u32,
    ) -> Result<Option<Arc<crate::domain::ModelVersion>>, CoreError> {
        let key = (vendor.clone(), name.to_owned(), version);
        {
            let kept = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((info, read_at)) = kept.get(&key)
                && read_at.elapsed() < VERSION_KEPT
            {
                return Ok(Some(info.clone()));
            }
        }
        let versions = store.model_versions(vendor, name).await?;
        let Some(info) = versions.into_iter().find(|v| v.version == version) else {
            return Ok(None);
        };
        let info = Arc::new(info);
        let mut kept = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|_, (_, read_at)| read_at.elapsed() < VERSION_KEPT);
        kept.insert(key, (info.clone(), Instant::now()));
        Ok(Some(info))
    }

    /// Forgets a version this process read (it was deleted).
    pub fn forget_version(&self, vendor: &crate::VendorId, name: &str, version: u32) {
        let mut kept = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        kept.remove(&(vendor.clone(), name.to_owned(), version));
    }

    /// How many models are loaded, and the memory they are taken to hold.
    pub fn loaded(&self) -> (usize, usize) {
        let loaded = self.lock();
        (loaded.by_sha.len(), loaded.total)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached(&self, sha256: &str) -> Option<Arc<dyn LoadedModel>> {
        let mut loaded = self.lock();
        loaded.clock += 1;
        let now = loaded.clock;
        loaded.by_sha.get_mut(sha256).map(|c| {
            c.used = now;
            c.model.clone()
        })
    }

    /// Keeps a loaded model, dropping the least recently used ones beyond the budget (a
    /// model larger than the whole budget is used once and not kept).
    fn keep(&self, sha256: &str, model: Arc<dyn LoadedModel>, bytes: usize) {
        if bytes > self.budget {
            return;
        }
        let mut loaded = self.lock();
        loaded.clock += 1;
        let used = loaded.clock;
        if let Some(old) = loaded
            .by_sha
            .insert(sha256.to_owned(), Cached { model, bytes, used })
        {
            loaded.total -= old.bytes;
        }
        loaded.total += bytes;
        while loaded.total > self.budget {
            let Some(oldest) = loaded
                .by_sha
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(sha, _)| sha.clone())
            else {
                break;
            };
            if let Some(gone) = loaded.by_sha.remove(&oldest) {
                loaded.total -= gone.bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Tensor;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An engine counting its loads, whose models answer nothing.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    struct Nothing;

    impl LoadedModel for Nothing {
        fn run(&self, _: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
            Ok(Vec::new())
        }
    }

    impl ModelEngine for Counting {
        fn inspect(&self, _: &[u8]) -> Result<Signature, String> {
            Err("not used".into())
        }
        fn load(&self, _: &[u8]) -> Result<Arc<dyn LoadedModel>, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(Nothing))
        }
    }

    /// Files of 100 bytes under `a`, `b`, `c` and `huge` (1,000 bytes).
    struct Files;

    #[async_trait::async_trait]
    impl ObjectStore for Files {
        async fn put(&self, _: &str, _: Vec<u8>) -> crate::ports::Result<()> {
            Ok(())
        }
        async fn get(&self, key: &str) -> crate::ports::Result<Vec<u8>> {
            Ok(vec![0; if key == "huge" { 1000 } else { 100 }])
        }
        async fn delete(&self, _: &str) -> crate::ports::Result<()> {
            Ok(())
        }
        async fn list(&self, _: &str) -> crate::ports::Result<Vec<String>> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn loaded_models_stay_within_the_budget_least_recently_used_out() {
        let engine = Arc::new(Counting::default());
        // Each 100-byte file is taken to hold 300 bytes loaded: two fit in 700.
        let models = Models::new(engine.clone(), Arc::new(Files), 700);
        let get = |key: &'static str| {
            let models = &models;
            async move {
                models
                    .get(&crate::ports::Inline, "test", key, key)
                    .await
                    .map(|_| ())
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        get("a").await;
        get("b").await;
        get("a").await;
        assert_eq!(engine.0.load(Ordering::SeqCst), 2, "a is kept");
        get("c").await;
        assert_eq!(models.loaded(), (2, 600), "b, least recently used, went");
        get("a").await;
        assert_eq!(engine.0.load(Ordering::SeqCst), 3, "a was kept");
        get("b").await;
        assert_eq!(engine.0.load(Ordering::SeqCst), 4, "b is loaded again");
        get("huge").await;
        get("huge").await;
        assert_eq!(
            engine.0.load(Ordering::SeqCst),
            6,
            "larger than the budget: never kept"
        );
        assert_eq!(models.loaded().0, 2);
    }
}
