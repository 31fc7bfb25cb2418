//! The local processor, one lane per tenant: each tenant reads its own raw records from the
//! change log after its own position ("process:{tenant}"), in a task of its own among the
//! [`Lanes`], so a tenant with expensive rules or many feeds holds back its own records,
//! never another tenant's. A dispatcher reads which tenants have new records and starts their
//! lanes. The "process" position is a low watermark: every record at or before it is
//! processed, and a restart looks for tenants with work after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wharf_core::ports::ChangeLog;
use wharf_core::{CoreError, Services, TenantId};
use wharf_workers::lanes::Lanes;
use wharf_workers::process::{FeedsOfSources, Processor};

/// Records one lane reads and processes at once.
const BATCH: usize = 500;
/// Tenants' lanes processing at once (their rules' CPU share is the compute pool's).
const LANES_AT_ONCE: usize = 8;
/// The low watermark's consumer name in the change log.
const LOW_WATERMARK: &str = "process";
/// How long a lane whose step failed waits before the dispatcher starts it again.
const RETRY_WAIT: Duration = Duration::from_secs(1);
/// The low watermark is stored at most this often while records keep coming: it only tells a
/// restart where to look for tenants with work, and each store is a commit on the one writer.
const WATERMARK_EVERY: Duration = Duration::from_secs(1);

/// A tenant's progress: processed up to `done` (unknown until read), records up to `known`.
#[derive(Default, Clone, Copy)]
struct Progress {
    done: Option<u64>,
    known: u64,
}

#[derive(Default)]
struct State {
    /// The log read up to here for new tenants' records (`None` until the first read).
    seen: Option<u64>,
    /// The low watermark at start: a tenant with no position of its own starts there.
    start: u64,
    /// The low watermark last stored, and when.
    stored: u64,
    stored_at: Option<Instant>,
    tenants: HashMap<TenantId, Progress>,
}

/// The processing lanes.
pub struct Processing {
    services: Services,
    log: Arc<dyn ChangeLog>,
    processor: Processor,
    lanes: Arc<Lanes<TenantId>>,
    state: Mutex<State>,
    /// One dispatch at a time.
    dispatching: tokio::sync::Mutex<()>,
}

fn consumer(tenant: &TenantId) -> String {
    format!("process:{tenant}")
}

impl Processing {
    /// Lanes over the change log `log`.
    pub fn new(services: Services, log: Arc<dyn ChangeLog>) -> Arc<Processing> {
        Arc::new(Processing {
            services,
            log,
            processor: Processor::default(),
            lanes: Lanes::new(LANES_AT_ONCE, 1),
            state: Mutex::default(),
            dispatching: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Finds the tenants with new records and starts the lane of every tenant with records
    /// left to process; stores the low watermark. Answers how many tenants had new records.
    pub async fn dispatch(self: &Arc<Self>) -> Result<usize, CoreError> {
        let _one = self.dispatching.lock().await;
        let read = self.state().seen;
        let seen = match read {
            Some(seen) => seen,
            None => {
                let low = self.log.consumer_position(LOW_WATERMARK).await?;
                let mut state = self.state();
                (state.start, state.stored) = (low, low);
                low
            }
        };
        let found = self.log.tenants_after(seen).await?;
        let (pending, low) = {
            let mut state = self.state();
            let mut seen = seen;
            for (tenant, last) in &found {
                let progress = state.tenants.entry(tenant.clone()).or_default();
                progress.known = progress.known.max(*last);
                seen = seen.max(*last);
            }
            state.seen = Some(seen);
            let start = state.start;
            state
                .tenants
                .retain(|_, p| p.done.is_none_or(|done| done < p.known));
            let pending: Vec<TenantId> = state.tenants.keys().cloned().collect();
            let low = state
                .tenants
                .values()
                .map(|p| p.done.unwrap_or(start).min(p.known))
                .min()
                .unwrap_or(seen);
            (pending, low)
        };
        let store = {
            let state = self.state();
            let due = state
                .stored_at
                .is_none_or(|at| at.elapsed() >= WATERMARK_EVERY);
            low > state.stored && (due || pending.is_empty())
        };
        if store {
            self.log.set_consumer_position(LOW_WATERMARK, low).await?;
            let mut state = self.state();
            (state.stored, state.stored_at) = (low, Some(Instant::now()));
        }
        for tenant in pending {
            let this = self.clone();
            let lane = tenant.clone();
            // `None`: the tenant's lane is running and reads on until it has caught up.
            let _ = self.lanes.spawn(&tenant, tenant.clone(), async move {
                this.run_lane(&lane).await;
            });
        }
        Ok(found.len())
    }

    /// Processes the tenant's records until it has caught up with what is known of them.
    async fn run_lane(&self, tenant: &TenantId) {
        loop {
            match self.step(tenant).await {
                Ok(true) => {}
                Ok(false) => {
                    let state = self.state();
                    let caught_up = state
                        .tenants
                        .get(tenant)
                        .is_none_or(|p| p.done.is_some_and(|done| done >= p.known));
                    if caught_up {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(tenant.id = %tenant, error = %e, "processing failed; the batch is retried");
                    tokio::time::sleep(RETRY_WAIT).await;
                    return;
                }
            }
        }
    }

    /// Processes the tenant's next batch; `true` when it read a whole batch.
    async fn step(&self, tenant: &TenantId) -> Result<bool, CoreError> {
        let (done, start) = {
            let state = self.state();
            (state.tenants.get(tenant).and_then(|p| p.done), state.start)
        };
        let done = match done {
            Some(done) => done,
            None => self
                .log
                .consumer_position(&consumer(tenant))
                .await?
                .max(start),
        };
        let batch = self.log.raw_of_tenant_after(tenant, done, BATCH).await?;
        let Some(&(last, _)) = batch.last() else {
            // Nothing after `done`: what was known is gone (expired) or processed.
            let mut state = self.state();
            let progress = state.tenants.entry(tenant.clone()).or_default();
            progress.done = Some(done.max(progress.known));
            return Ok(false);
        };
        let records: Vec<_> = batch.into_iter().map(|(_, r)| r).collect();
        // The position is committed only after the outputs are stored; outputs are keyed by
        // derived ids, so a batch processed again after a crash writes nothing new.
        self.processor
            .handle(&self.services, &records, None, &FeedsOfSources::default())
            .await?;
        self.log
            .set_consumer_position(&consumer(tenant), last)
            .await?;
        let mut state = self.state();
        let progress = state.tenants.entry(tenant.clone()).or_default();
        progress.done = Some(last);
        progress.known = progress.known.max(last);
        Ok(records.len() == BATCH)
    }

    /// Dispatches and waits for the lanes until no tenant has records left; answers how
    /// many dispatches found new records.
    pub async fn until_idle(self: &Arc<Self>, rounds: usize) -> Result<usize, CoreError> {
        for work in 0..rounds {
            let found = self.dispatch().await?;
            self.lanes.until_idle().await;
            let pending = self
                .state()
                .tenants
                .values()
                .any(|p| p.done.is_none_or(|done| done < p.known));
            if found == 0 && !pending {
                return Ok(work);
            }
        }
        Err(CoreError::unavailable(
            "the processing lanes did not come to rest",
        ))
    }
}
