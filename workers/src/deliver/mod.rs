//! Delivery by Wharf's own sender (webhooks, and email where no topic sends it). Each
//! subscription keeps a position in its feed's output; a pass reads the records after it,
//! plans the deliveries ([`plan`]), sends them ([`send`]), settles what each attempt came to
//! ([`settle`]) and commits: the position moves, the acknowledged records are counted and the
//! failures parked for retry in one atomic write ([`Services::acknowledge`]), so each record
//! is counted once whatever crashes or retries happen. [`retry`] sends parked deliveries
//! when they come due.

#[cfg(test)]
pub(crate) mod fixtures;
mod plan;
mod retry;
mod send;
mod settle;

pub use plan::{Plan, delivery_id, plan, record_json};
pub use retry::retry_due;

use std::time::Duration;
use wharf_core::domain::Subscription;
use wharf_core::{CoreError, DeliveryId, RecordId, Services};

/// How deliveries are attempted.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Waits before the 2nd, 3rd, … attempt; after the last one the delivery is given up.
    pub retry_schedule: Vec<Duration>,
    /// How long an endpoint has to answer.
    pub timeout: Duration,
    /// An endpoint failing for this long is disabled and its subscriber told.
    pub disable_after: Duration,
    /// Records read per pass and subscription.
    pub chunk: usize,
    /// POSTs in flight per subscription.
    pub in_flight: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let m = 60;
        let h = 3600;
        DeliveryConfig {
            retry_schedule: [5, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .map(Duration::from_secs)
                .to_vec(),
            timeout: Duration::from_secs(10),
            disable_after: Duration::from_secs(5 * 24 * h),
            chunk: 1000,
            in_flight: 16,
        }
    }
}

/// One delivery: its records, their positions and the body that carries them.
#[derive(Debug)]
pub struct Job {
    /// Derived from the records and the subscription; stable across retries.
    pub id: DeliveryId,
    /// The records, in feed order.
    pub records: Vec<RecordId>,
    /// Their positions.
    pub positions: Vec<u64>,
    /// The JSON sent.
    pub body: Vec<u8>,
}

/// One pass over a subscription Wharf's sender delivers: delivers what its feed produced
/// since its position. Returns the number of records the pass moved past.
#[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %sub.tenant_id, subscription.id = %sub.id))]
pub async fn deliver_push(
    services: &Services,
    sub: &Subscription,
    config: &DeliveryConfig,
) -> Result<usize, CoreError> {
    if !services.is_sent_by_wharf(sub) {
        return Ok(0);
    }
    let store = &services.store;
    let from = store.delivery_position(&sub.tenant_id, &sub.id).await?;
    let rows = store
        .output_after(&sub.tenant_id, &sub.feed_id, from, config.chunk)
        .await?;
    let (rows, admitted) = services.filter_marks(sub, rows).await?;
    let now = services.clock.now();
    let Some(plan) = plan::plan(sub, &rows, &admitted, from, config.chunk, now) else {
        return Ok(0);
    };
    let jobs = plan.jobs(sub)?;
    let results = match send::transport(services, sub, now).await? {
        Some(transport) if !jobs.is_empty() => {
            send::send_all(services, &transport, sub, jobs, config, now).await?
        }
        Some(_) => Vec::new(),
        None => return Ok(0),
    };
    let settled = settle::settle(sub, results, config, now);
    if !services
        .acknowledge(sub, from, plan.to, settled.acknowledged, &settled.parked)
        .await?
    {
        // Another pass moved this subscription on; what it sent counts, not ours.
        return Ok(0);
    }
    store.log_attempts(&sub.tenant_id, &settled.log).await?;
    settle::endpoint_health(services, sub, settled.health, config, now).await?;
    Ok(plan.moved_past(&rows))
}

/// Delivery passes over one subscription while there is work, at most `max_passes`, each on
/// the subscription as stored then: it may have been paused, changed or cancelled since the
/// caller read it. A `Conflict` (another worker moved the position first) ends the passes,
/// as that worker delivers. Returns the records moved past.
pub async fn drain(
    services: &Services,
    sub: &Subscription,
    config: &DeliveryConfig,
    max_passes: usize,
) -> Result<usize, CoreError> {
    let mut moved = 0;
    for _ in 0..max_passes {
        let current = services
            .store
            .get_subscription(&sub.tenant_id, &sub.id)
            .await?;
        match deliver_push(services, &current, config).await {
            Ok(0) => break,
            Ok(n) => moved += n,
            Err(CoreError::Conflict(_)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}
