//! The local shape's workers, run inside `wharf serve`: each tenant's raw records are
//! processed in a lane of their own ([`processing`]); each active subscription Wharf's
//! sender delivers gets its own delivery task (the supervisor's), so a slow or hanging
//! endpoint only ever delays itself; each windowed feed and each polled source is worked on
//! in a task of its own when due; retries and retention run on timers. Notifications wake
//! the loops at once; timers catch anything a notification missed.
//!
//! The loops run on a runtime of their own whose threads are scheduled below the API's
//! (`nice` 5; expressions run lower still, on the compute threads): on a busy machine a
//! request is served before any tenant's pipeline work, and the per-tenant lanes share what
//! is left between the tenants.
//!
//! [`LocalWorkers::run_until_idle`] drives the same steps until none has work left: what
//! tests and tools wait on instead of sleeping.

mod processing;

use processing::Processing;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use wharf_core::domain::Subscription;
use wharf_core::ports::ChangeLog;
use wharf_core::{CoreError, PageRequest, Services};
use wharf_workers::deliver::{self, DeliveryConfig};
use wharf_workers::poll::Poller;
use wharf_workers::schedule::Windows;
use wharf_workers::supervisor::Supervisor;
use wharf_workers::wake::Wakers;

/// How much lower than the API the pipeline's threads are scheduled (Linux `nice`).
const PIPELINE_NICER_BY: i32 = 5;
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Rounds `run_until_idle` makes before it reports that work keeps coming.
const MAX_ROUNDS: usize = 100;

/// The running loops and the runtime they run on.
pub struct Pipeline {
    runtime: tokio::runtime::Runtime,
    loops: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Stops every loop and the tasks they started, without waiting for them.
    pub fn stop(self) {
        for task in self.loops {
            task.abort();
        }
        self.runtime.shutdown_background();
    }
}

/// The local shape's workers and the state their steps share.
pub struct LocalWorkers {
    services: Services,
    notifier: Arc<Wakers>,
    config: DeliveryConfig,
    supervisor: Supervisor,
    processing: Arc<Processing>,
    windows: Windows,
    poller: Poller,
    /// One pass over due retries at a time.
    retries: Mutex<()>,
}

impl LocalWorkers {
    /// The workers over `services`, reading `log`, woken by `notifier`.
    pub fn new(
        services: Services,
        log: Arc<dyn ChangeLog>,
        notifier: Arc<Wakers>,
        config: DeliveryConfig,
    ) -> Arc<LocalWorkers> {
        Arc::new(LocalWorkers {
            supervisor: Supervisor::new(services.clone(), config.clone(), usize::MAX),
            processing: Processing::new(services.clone(), log),
            services,
            notifier,
            config,
            windows: Windows::default(),
            poller: Poller::default(),
            retries: Mutex::new(()),
        })
    }

    /// Starts every loop on the pipeline's runtime; they run until [`Pipeline::stop`].
    pub fn start(self: &Arc<Self>) -> std::io::Result<Pipeline> {
        let runtime = pipeline_runtime()?;
        let loops = vec![
            runtime.spawn(self.clone().process_loop()),
            runtime.spawn(self.clone().delivery_loop()),
            runtime.spawn(self.clone().retry_loop()),
            runtime.spawn(self.clone().schedule_loop()),
            runtime.spawn(retention_loop(self.services.clone())),
            runtime.spawn(billing_loop(self.services.clone())),
        ];
        Ok(Pipeline { runtime, loops })
    }

    /// Drives every step until a round finds no work: every tenant's records processed,
    /// due windows closed, due retries attempted, and every subscription Wharf's sender
    /// delivers passed over until its position stops moving (a held partial batch stays
    /// held). Safe beside the running loops: each step is one the loops would take.
    pub async fn run_until_idle(&self) -> Result<(), CoreError> {
        let mut positions = self.positions().await?;
        for _ in 0..MAX_ROUNDS {
            let mut work = self.processing.until_idle(MAX_ROUNDS).await?;
            work += self.windows.close_due(&self.services).await?;
            self.windows.until_idle().await;
            work += self.retry_due().await?;
            work += self.services.close_due_months().await?.len();
            work += self.services.end_deprecated_feeds().await?;
            let collected = self.services.collect_payments().await?;
            work += collected.overdue + collected.transferred;
            self.wake_deliveries().await?;
            self.supervisor.until_idle().await;
            let now = self.positions().await?;
            if work == 0 && now == positions {
                return Ok(());
            }
            positions = now;
        }
        Err(CoreError::unavailable(
            "the local workers did not come to rest",
        ))
    }

    async fn retry_due(&self) -> Result<usize, CoreError> {
        let _one = self.retries.lock().await;
        deliver::retry_due(&self.services, &self.config, 200).await
    }

    /// Wakes the delivery task of every active subscription Wharf's sender delivers.
    async fn wake_deliveries(&self) -> Result<(), CoreError> {
        for sub in self.active_subscriptions().await? {
            if !self.supervisor.is_running(&sub.id) {
                self.supervisor.wake(sub);
            }
        }
        Ok(())
    }

    async fn active_subscriptions(&self) -> Result<Vec<Subscription>, CoreError> {
        let mut all = Vec::new();
        let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
        loop {
            let subs = self.services.store.list_active_subscriptions(&page).await?;
            all.extend(subs.items);
            match subs.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// Every active subscription's delivery position: what a round of delivery moves.
    async fn positions(&self) -> Result<Vec<u64>, CoreError> {
        let mut positions = Vec::new();
        for sub in self.active_subscriptions().await? {
            let store = &self.services.store;
            positions.push(store.delivery_position(&sub.tenant_id, &sub.id).await?);
        }
        Ok(positions)
    }

    /// Starts the lanes of tenants with new records when records are appended (and on a
    /// timer).
    async fn process_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.processing.dispatch().await {
                tracing::error!(error = %e, "cannot read the change log");
            }
            self.notifier.raw_stored(IDLE_WAIT * 10).await;
        }
    }

    /// Wakes the delivery tasks when outputs are appended or a subscription changes (and on
    /// a timer).
    async fn delivery_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.wake_deliveries().await {
                tracing::error!(error = %e, "cannot list subscriptions");
            }
            self.notifier.outputs_stored(IDLE_WAIT).await;
        }
    }

    /// Due retries every quarter second, at once again while there were some.
    async fn retry_loop(self: Arc<Self>) {
        loop {
            match self.retry_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retrying deliveries failed"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every half second, starts closing due windows and polling due sources; both run in
    /// tasks of their own, so a slow feed or source never holds the schedule.
    async fn schedule_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.windows.start_due(&self.services).await {
                tracing::warn!(error = %e, "cannot list windowed feeds");
            }
            if let Err(e) = self.poller.start_due(&self.services).await {
                tracing::warn!(error = %e, "cannot list polled sources");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The runtime the loops run on: a worker thread per core, below the API's priority.
fn pipeline_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, usize::from))
        .thread_name("wharf-pipeline")
        .on_thread_start(|| wharf_workers::compute::lower_priority(PIPELINE_NICER_BY))
        .enable_all()
        .build()
}

/// Every minute, closes the months that are due (`billing_close_delay_hours` after their end),
/// ends deprecated feeds whose end came, and collects: pushes again what could not be pushed, pauses for overdue invoices, pays
/// vendors.
async fn billing_loop(services: Services) {
    loop {
        if let Err(e) = services.close_due_months().await {
            tracing::warn!(error = %e, "closing a due month failed; the next minute tries again");
        }
        if let Err(e) = services.end_deprecated_feeds().await {
            tracing::warn!(error = %e, "ending deprecated feeds failed; the next minute tries again");
        }
        if let Err(e) = services.collect_payments().await {
            tracing::warn!(error = %e, "collecting payments failed; the next minute tries again");
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

async fn retention_loop(services: Services) {
    loop {
        match wharf_workers::retention::sweep(&services).await {
            Ok(swept) if swept != Default::default() => tracing::info!(
                records = swept.records,
                attempts = swept.attempts,
                errors = swept.errors,
                "expired entries removed"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the retention sweep failed"),
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use wharf_workers::compute::thread_nice;

    #[test]
    fn the_pipeline_runs_below_the_priority_of_the_threads_serving_requests() {
        let serving = thread_nice().expect("this thread's nice value");
        let runtime = pipeline_runtime().expect("the pipeline's runtime");
        let working = runtime.block_on(async { tokio::spawn(async { thread_nice() }).await });
        let blocking = runtime.block_on(async { tokio::task::spawn_blocking(thread_nice).await });
        runtime.shutdown_background();
        let below = Some((serving + i64::from(PIPELINE_NICER_BY)).min(19));
        assert_eq!(working.expect("the task ran"), below);
        assert_eq!(blocking.expect("the blocking call ran"), below);
    }
}
