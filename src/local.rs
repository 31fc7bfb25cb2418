//! The local shape's workers, run inside `wharf serve`: the processor follows the change log
//! of raw records; each active webhook or email subscription gets its own delivery task, so a slow or
//! hanging endpoint only ever delays itself; windows, due retries and record retention run on
//! timers.
//! Notifications wake the loops at once; timers catch anything a notification missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use wharf_core::domain::Channel;
use wharf_core::ports::{ChangeLog, Notifier};
use wharf_core::{PageRequest, Services, SubscriptionId};
use wharf_workers::deliver::{self, DeliveryConfig};
use wharf_workers::process::{FeedsOfSources, Processor};

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

/// Starts every local worker loop; they run until the process ends.
pub fn spawn_workers(
    services: Services,
    log: Arc<dyn ChangeLog>,
    notifier: Arc<LocalNotifier>,
    config: DeliveryConfig,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(process_loop(services.clone(), log, notifier.clone())),
        tokio::spawn(delivery_loop(
            services.clone(),
            notifier.clone(),
            config.clone(),
        )),
        tokio::spawn(retry_loop(services.clone(), config)),
        tokio::spawn(window_loop(services.clone())),
        tokio::spawn(poll_loop(services.clone())),
        tokio::spawn(retention_loop(services)),
    ]
}

async fn process_loop(services: Services, log: Arc<dyn ChangeLog>, notifier: Arc<LocalNotifier>) {
    let processor = Processor::default();
    let mut position = loop {
        match log.consumer_position("process").await {
            Ok(p) => break p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the processor's position; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let batch = match log.raw_after(position, PROCESS_BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read new records; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(&(last, _)) = batch.last() else {
            let _ = tokio::time::timeout(IDLE_WAIT * 10, notifier.raw.notified()).await;
            continue;
        };
        let records: Vec<_> = batch.into_iter().map(|(_, r)| r).collect();
        // The position is committed only after the outputs are stored; outputs are keyed
        // by derived ids, so a batch processed again after a crash writes nothing new.
        match processor
            .handle(&services, &records, None, &mut FeedsOfSources::default())
            .await
        {
            Ok(_) => match log.set_consumer_position("process", last).await {
                Ok(()) => position = last,
                Err(e) => tracing::error!(error = %e, "cannot commit the processor's position"),
            },
            Err(e) => {
                tracing::error!(error = %e, "processing failed; retrying the batch");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn delivery_loop(services: Services, notifier: Arc<LocalNotifier>, config: DeliveryConfig) {
    let mut running: HashMap<SubscriptionId, JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
        loop {
            let subs = match services.store.list_active_subscriptions(&page).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list subscriptions");
                    break;
                }
            };
            for sub in subs.items {
                let pushed = matches!(sub.channel, Channel::Webhook { .. } | Channel::Email { .. });
                if !pushed || running.contains_key(&sub.id) {
                    continue;
                }
                let (services, config, id) = (services.clone(), config.clone(), sub.id.clone());
                running.insert(
                    id,
                    tokio::spawn(async move {
                        // Keep passing while there is work, so a busy feed is drained quickly;
                        // each pass reads the subscription, which may be paused meanwhile.
                        if let Err(e) = deliver::drain(&services, &sub, &config, usize::MAX).await {
                            tracing::warn!(subscription.id = %sub.id, error = %e, "delivery pass failed");
                        }
                    }),
                );
            }
            match subs.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        let _ = tokio::time::timeout(IDLE_WAIT, notifier.outputs.notified()).await;
    }
}

async fn retry_loop(services: Services, config: DeliveryConfig) {
    loop {
        match deliver::retry_due(&services, &config, 200).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retrying deliveries failed"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn window_loop(services: Services) {
    loop {
        if let Err(e) = wharf_workers::schedule::close_due_windows(&services).await {
            tracing::warn!(error = %e, "closing windows failed");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
        let now = services.clock.now();
        report_expired("records", services.store.expire_records(now).await);
        // A retention too long to subtract from now keeps everything.
        let cut = time::Duration::try_from(services.settings.log_retention)
            .ok()
            .and_then(|keep| now.checked_sub(keep));
        if let Some(cut) = cut {
            report_expired(
                "delivery log entries",
                services.store.expire_attempts(cut).await,
            );
            report_expired("feed errors", services.store.expire_feed_errors(cut).await);
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

fn report_expired(what: &str, expired: Result<usize, wharf_core::CoreError>) {
    match expired {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "expired {what} removed"),
        Err(e) => tracing::warn!(error = %e, "expiring {what} failed"),
    }
}
