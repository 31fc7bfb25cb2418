//! The local shape's workers, run inside `wharf serve`: the processor follows the change log
//! of raw records; each active subscription Wharf's sender delivers gets its own delivery
//! task (the supervisor's), so a slow or hanging endpoint only ever delays itself; windows,
//! due retries, polls and retention run on timers. Notifications wake the loops at once;
//! timers catch anything a notification missed.
//!
//! [`LocalWorkers::run_until_idle`] drives the same steps, under the same locks, until none
//! has work left: what tests and tools wait on instead of sleeping.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use wharf_core::domain::Subscription;
use wharf_core::ports::{ChangeLog, Notifier};
use wharf_core::{CoreError, PageRequest, Services};
use wharf_workers::deliver::{self, DeliveryConfig};
use wharf_workers::process::{FeedsOfSources, Processor};
use wharf_workers::supervisor::Supervisor;

/// Wakes the local loops.
#[derive(Default)]
pub struct LocalNotifier {
    raw: Notify,
    outputs: Notify,
}

impl Notifier for LocalNotifier {
    fn raw_appended(&self) {
        self.raw.notify_one();
    }
    fn outputs_appended(&self) {
        self.outputs.notify_one();
    }
}

const PROCESS_BATCH: usize = 500;
const IDLE_WAIT: Duration = Duration::from_millis(100);
const RETRY_WAIT: Duration = Duration::from_secs(1);
/// The processor's consumer name in the change log.
const CONSUMER: &str = "process";
/// Rounds `run_until_idle` makes before it reports that work keeps coming.
const MAX_ROUNDS: usize = 100;

/// The processor and how far it has read the change log (`None`: not read yet).
struct Processing {
    processor: Processor,
    position: Option<u64>,
}

/// The local shape's workers and the state their steps share.
pub struct LocalWorkers {
    services: Services,
    log: Arc<dyn ChangeLog>,
    notifier: Arc<LocalNotifier>,
    config: DeliveryConfig,
    supervisor: Supervisor,
    /// One processing step at a time.
    processing: Mutex<Processing>,
    /// One pass over windows, and over due retries, at a time.
    windows: Mutex<()>,
    retries: Mutex<()>,
}

impl LocalWorkers {
    /// The workers over `services`, reading `log`, woken by `notifier`.
    pub fn new(
        services: Services,
        log: Arc<dyn ChangeLog>,
        notifier: Arc<LocalNotifier>,
        config: DeliveryConfig,
    ) -> Arc<LocalWorkers> {
        Arc::new(LocalWorkers {
            supervisor: Supervisor::new(services.clone(), config.clone(), usize::MAX),
            services,
            log,
            notifier,
            config,
            processing: Mutex::new(Processing {
                processor: Processor::default(),
                position: None,
            }),
            windows: Mutex::new(()),
            retries: Mutex::new(()),
        })
    }

    /// Starts every loop; they run until the process ends.
    pub fn spawn(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().process_loop()),
            tokio::spawn(self.clone().delivery_loop()),
            tokio::spawn(self.clone().timer_loop()),
            tokio::spawn(poll_loop(self.services.clone())),
            tokio::spawn(retention_loop(self.services.clone())),
        ]
    }

    /// Drives every step until a round finds no work: the change log processed to its end,
    /// due windows closed, due retries attempted, and every subscription Wharf's sender
    /// delivers passed over until its position stops moving (a held partial batch stays
    /// held). Safe beside the running loops: each step holds the lock its loop holds.
    pub async fn run_until_idle(&self) -> Result<(), CoreError> {
        let mut positions = self.positions().await?;
        for _ in 0..MAX_ROUNDS {
            let mut work = 0;
            while self.process_step().await? > 0 {
                work += 1;
            }
            work += self.close_windows().await?;
            work += self.retry_due().await?;
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

    /// Processes the next batch of the change log; answers how many records it read.
    async fn process_step(&self) -> Result<usize, CoreError> {
        let mut processing = self.processing.lock().await;
        let position = match processing.position {
            Some(p) => p,
            None => self.log.consumer_position(CONSUMER).await?,
        };
        let batch = self.log.raw_after(position, PROCESS_BATCH).await?;
        let Some(&(last, _)) = batch.last() else {
            processing.position = Some(position);
            return Ok(0);
        };
        let records: Vec<_> = batch.into_iter().map(|(_, r)| r).collect();
        // The position is committed only after the outputs are stored; outputs are keyed by
        // derived ids, so a batch processed again after a crash writes nothing new.
        processing
            .processor
            .handle(
                &self.services,
                &records,
                None,
                &mut FeedsOfSources::default(),
            )
            .await?;
        self.log.set_consumer_position(CONSUMER, last).await?;
        processing.position = Some(last);
        Ok(records.len())
    }

    async fn close_windows(&self) -> Result<usize, CoreError> {
        let _one = self.windows.lock().await;
        wharf_workers::schedule::close_due_windows(&self.services).await
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

    async fn process_loop(self: Arc<Self>) {
        loop {
            match self.process_step().await {
                Ok(0) => {
                    let _ =
                        tokio::time::timeout(IDLE_WAIT * 10, self.notifier.raw.notified()).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "processing failed; retrying the batch");
                    tokio::time::sleep(RETRY_WAIT).await;
                }
            }
        }
    }

    /// Wakes the delivery tasks when outputs are appended or a subscription changes (and on
    /// a timer).
    async fn delivery_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.wake_deliveries().await {
                tracing::error!(error = %e, "cannot list subscriptions");
            }
            let _ = tokio::time::timeout(IDLE_WAIT, self.notifier.outputs.notified()).await;
        }
    }

    /// Due retries every quarter second (at once again while there were some), due windows
    /// every half second.
    async fn timer_loop(self: Arc<Self>) {
        let mut tick = 0u64;
        loop {
            match self.retry_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retrying deliveries failed"),
            }
            if tick.is_multiple_of(2)
                && let Err(e) = self.close_windows().await
            {
                tracing::warn!(error = %e, "closing windows failed");
            }
            tick += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn poll_loop(services: Services) {
    loop {
        if let Err(e) = wharf_workers::poll::poll_due(&services).await {
            tracing::warn!(error = %e, "polling sources failed");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
