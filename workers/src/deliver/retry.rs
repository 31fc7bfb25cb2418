//! Retrying parked deliveries when they come due: each read again by position (checking each
//! position still holds its record), sent again under its own id, and settled one by one.

use super::send::{Verdict, send_all, transport};
use super::settle::{Health, endpoint_health, log_entry, next_attempt};
use super::{DeliveryConfig, Job, plan::body};
use std::collections::HashMap;
use std::time::Duration;
use wharf_core::domain::{
    AttemptStatus, DeliveryAttempt, OutputRecord, PendingDelivery, Subscription, SubscriptionStatus,
};
use wharf_core::{CoreError, Services, TenantId, Timestamp};

/// Most due deliveries of one tenant a round retries; the rest wait for a later round.
const PER_TENANT: usize = 50;
/// How long a tenant's deliveries beyond its share of a round wait.
const DEFER: Duration = Duration::from_secs(30);

/// Retries the pending deliveries that are due, the subscriptions side by side, so a hanging
/// endpoint holds a round for one webhook timeout at most. A tenant's deliveries beyond its
/// share of the round are moved to a later round, so a tenant with thousands of failing
/// deliveries slows its own retries, not other tenants'. Returns how many were due.
pub async fn retry_due(
    services: &Services,
    config: &DeliveryConfig,
    limit: usize,
) -> Result<usize, CoreError> {
    let now = services.clock.now();
    let due = services.store.due_deliveries(now, limit).await?;
    let count = due.len();
    let mut shares: HashMap<TenantId, usize> = HashMap::new();
    let mut by_sub: HashMap<_, Vec<PendingDelivery>> = HashMap::new();
    for mut d in due {
        let share = shares.entry(d.tenant_id.clone()).or_default();
        if *share >= PER_TENANT {
            d.next_attempt_at = now + DEFER;
            match services.store.reschedule(&d).await {
                Ok(()) | Err(CoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        *share += 1;
        by_sub
            .entry((d.tenant_id.clone(), d.subscription_id.clone()))
            .or_default()
            .push(d);
    }
    let rounds = by_sub.into_iter().map(|((tenant, sub_id), pending)| async move {
        let retried = retry_of(services, config, &tenant, &sub_id, pending, now).await;
        if let Err(e) = retried {
            tracing::warn!(tenant.id = %tenant, subscription.id = %sub_id, error = %e, "retrying deliveries failed");
        }
    });
    futures_util::future::join_all(rounds).await;
    Ok(count)
}

/// Retries one subscription's due deliveries (dropped when the subscription is gone).
async fn retry_of(
    services: &Services,
    config: &DeliveryConfig,
    tenant: &TenantId,
    sub_id: &wharf_core::SubscriptionId,
    pending: Vec<PendingDelivery>,
    now: Timestamp,
) -> Result<(), CoreError> {
    match services.store.get_subscription(tenant, sub_id).await {
        Ok(sub) => retry_subscription(services, &sub, pending, config, now).await,
        Err(CoreError::NotFound(_)) => {
            for d in &pending {
                services.store.drop_pending(&d.id).await?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %sub.tenant_id, subscription.id = %sub.id, deliveries = pending.len()))]
async fn retry_subscription(
    services: &Services,
    sub: &Subscription,
    pending: Vec<PendingDelivery>,
    config: &DeliveryConfig,
    now: Timestamp,
) -> Result<(), CoreError> {
    let store = &services.store;
    if sub.status == SubscriptionStatus::Paused {
        for mut d in pending {
            d.next_attempt_at = now + Duration::from_secs(60);
            store.reschedule(&d).await?;
        }
        return Ok(());
    }
    let transport = match services.is_sent_by_wharf(sub) {
        true => transport(services, sub, now).await?,
        // Cancelled, or moved to a channel Wharf's sender does not deliver.
        false => None,
    };
    let Some(transport) = transport else {
        for d in &pending {
            store.drop_pending(&d.id).await?;
        }
        return Ok(());
    };
    let (jobs, kept) = retry_jobs(services, sub, pending).await?;
    if jobs.is_empty() {
        return Ok(());
    }
    let results = send_all(services, &transport, sub, jobs, config, now).await?;
    let mut health = Health::default();
    let mut log = Vec::new();
    for ((job, verdict), d) in results.into_iter().zip(kept) {
        let entry = settle_retry(services, sub, d, &job, &verdict, config, now).await?;
        health.any_ok |= entry.status == AttemptStatus::Delivered;
        health.gone |= entry.status == AttemptStatus::Disabled;
        health.any_failed |= matches!(entry.status, AttemptStatus::Failed | AttemptStatus::GaveUp);
        log.push(entry);
    }
    store.log_attempts(&sub.tenant_id, &log).await?;
    endpoint_health(services, sub, health, config, now).await
}

/// The deliveries to attempt again, read by position (the ids make sure each position still
/// holds its record); a delivery whose records are all gone (expired) is dropped.
async fn retry_jobs(
    services: &Services,
    sub: &Subscription,
    pending: Vec<PendingDelivery>,
) -> Result<(Vec<Job>, Vec<PendingDelivery>), CoreError> {
    let mut jobs = Vec::new();
    let mut kept = Vec::new();
    for d in pending {
        let records: Vec<OutputRecord> = services
            .store
            .output_at(&sub.tenant_id, &sub.feed_id, &d.positions)
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| d.record_ids.contains(&r.id))
            .collect();
        if records.is_empty() {
            services.store.drop_pending(&d.id).await?;
            continue;
        }
        let refs: Vec<&OutputRecord> = records.iter().collect();
        let batched = sub.batch.is_some() || refs.len() > 1;
        jobs.push(Job {
            id: d.id.clone(),
            records: d.record_ids.clone(),
            positions: d.positions.clone(),
            body: body(&refs, batched)?,
        });
        kept.push(d);
    }
    Ok((jobs, kept))
}

/// Settles one retry: acknowledged (counted unless a replay), gone, or failed again (due
/// again later, or given up); answers its row of the delivery log.
async fn settle_retry(
    services: &Services,
    sub: &Subscription,
    mut d: PendingDelivery,
    job: &Job,
    verdict: &Verdict,
    config: &DeliveryConfig,
    now: Timestamp,
) -> Result<DeliveryAttempt, CoreError> {
    let store = &services.store;
    let attempt_no = d.attempts + 1;
    let next = match verdict {
        Verdict::Failed { retry_after, .. } => next_attempt(config, attempt_no, *retry_after, now),
        _ => None,
    };
    match (verdict, next) {
        (Verdict::Delivered(_), _) => {
            store.ack_pending(&d, job.records.len() as u64, now).await?;
        }
        (Verdict::Failed { .. }, Some(next)) => {
            d.attempts = attempt_no;
            d.next_attempt_at = next;
            store.reschedule(&d).await?;
        }
        (Verdict::Gone(_) | Verdict::Failed { .. }, _) => store.drop_pending(&d.id).await?,
    }
    Ok(log_entry(sub, job, attempt_no, verdict, next, now))
}
