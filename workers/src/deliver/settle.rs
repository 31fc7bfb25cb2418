//! Settling what a pass's attempts came to: the delivery log's rows, the failures parked for
//! their next attempt, and the endpoint's health (a 410, or days of failures, pause the
//! subscription and tell the subscriber).

use super::DeliveryConfig;
use super::Job;
use super::send::Verdict;
use std::time::Duration;
use wharf_core::domain::{
    AttemptStatus, Counted, DeliveryAttempt, PendingDelivery, Subscription, SubscriptionStatus,
};
use wharf_core::{CoreError, Services, Timestamp};

/// How an endpoint fared in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Some delivery was acknowledged.
    pub any_ok: bool,
    /// Some delivery failed.
    pub any_failed: bool,
    /// The endpoint answered 410 Gone.
    pub gone: bool,
}

/// What a pass's attempts came to, ready to commit.
#[derive(Debug, Default)]
pub struct Settled {
    /// Records acknowledged, to count.
    pub acknowledged: Counted,
    /// Failed deliveries to attempt again.
    pub parked: Vec<PendingDelivery>,
    /// The delivery log's rows.
    pub log: Vec<DeliveryAttempt>,
    /// How the endpoint fared.
    pub health: Health,
}

/// Settles the first attempts of a pass's deliveries.
pub fn settle(
    sub: &Subscription,
    results: Vec<(Job, Verdict)>,
    config: &DeliveryConfig,
    now: Timestamp,
) -> Settled {
    let mut settled = Settled::default();
    for (job, verdict) in results {
        let next = match &verdict {
            Verdict::Failed { retry_after, .. } => next_attempt(config, 1, *retry_after, now),
            _ => None,
        };
        settled
            .log
            .push(log_entry(sub, &job, 1, &verdict, next, now));
        match verdict {
            Verdict::Delivered(_) => {
                settled.health.any_ok = true;
                settled.acknowledged += sub.counted(job.positions.iter().copied());
            }
            Verdict::Gone(_) => settled.health.gone = true,
            Verdict::Failed { .. } => {
                settled.health.any_failed = true;
                if let Some(next) = next {
                    // A plan never mixes backfill with the month's records in one delivery.
                    let backfill = job.positions.first().is_some_and(|p| sub.is_backfill(*p));
                    settled.parked.push(PendingDelivery {
                        id: job.id,
                        tenant_id: sub.tenant_id.clone(),
                        subscription_id: sub.id.clone(),
                        record_ids: job.records,
                        positions: job.positions,
                        attempts: 1,
                        next_attempt_at: next,
                        first_failed_at: now,
                        replay: false,
                        backfill,
                    });
                }
            }
        }
    }
    settled
}

/// When a delivery that failed its `attempts`th attempt is tried again: the retry
/// schedule's wait, or the endpoint's `Retry-After` when longer; `None` when the schedule is
/// spent (given up).
pub(super) fn next_attempt(
    config: &DeliveryConfig,
    attempts: u32,
    retry_after: Option<u64>,
    now: Timestamp,
) -> Option<Timestamp> {
    let wait = config
        .retry_schedule
        .get(attempts.saturating_sub(1) as usize)?;
    let wait = retry_after
        .map(Duration::from_secs)
        .map_or(*wait, |r| r.max(*wait));
    Some(now + wait)
}

/// The delivery-log row of one attempt; `next` is when a failed delivery is tried again
/// (`None` after a failure: given up).
pub(super) fn log_entry(
    sub: &Subscription,
    job: &Job,
    attempt: u32,
    verdict: &Verdict,
    next: Option<Timestamp>,
    now: Timestamp,
) -> DeliveryAttempt {
    let (status, status_code, error) = match verdict {
        Verdict::Delivered(code) => (AttemptStatus::Delivered, *code, None),
        Verdict::Gone(code) => (
            AttemptStatus::Disabled,
            Some(*code),
            Some("the endpoint answered 410 Gone; the subscription is paused".to_owned()),
        ),
        Verdict::Failed { status, error, .. } => (
            if next.is_some() {
                AttemptStatus::Failed
            } else {
                AttemptStatus::GaveUp
            },
            *status,
            Some(error.clone()),
        ),
    };
    DeliveryAttempt {
        delivery_id: job.id.clone(),
        subscription_id: sub.id.clone(),
        records: job.records.len() as u32,
        attempt,
        status,
        status_code,
        error,
        next_attempt_at: next,
        at: now,
    }
}

/// Tracks since when an endpoint fails, and pauses the subscription when it answered 410 or
/// has failed for `disable_after`.
pub(super) async fn endpoint_health(
    services: &Services,
    sub: &Subscription,
    health: Health,
    config: &DeliveryConfig,
    now: Timestamp,
) -> Result<(), CoreError> {
    let Health {
        any_ok,
        any_failed,
        gone,
    } = health;
    let failing_since = if any_ok {
        None
    } else if any_failed {
        sub.failing_since.or(Some(now))
    } else {
        sub.failing_since
    };
    let expired = failing_since.is_some_and(|since| now - since >= config.disable_after);
    let reason = if gone {
        Some("the endpoint answered 410 Gone".to_owned())
    } else if expired {
        Some(format!(
            "every delivery failed for {} days",
            config.disable_after.as_secs() / 86_400
        ))
    } else {
        None
    };
    if failing_since == sub.failing_since && reason.is_none() {
        return Ok(());
    }
    for _ in 0..5 {
        let mut current = services
            .store
            .get_subscription(&sub.tenant_id, &sub.id)
            .await?;
        current.failing_since = failing_since;
        let disabling = reason.is_some() && current.status == SubscriptionStatus::Active;
        if let Some(reason) = &reason
            && current.status == SubscriptionStatus::Active
        {
            current.status = SubscriptionStatus::Paused;
            current.history.push(wharf_core::domain::StatusChange {
                status: SubscriptionStatus::Paused,
                at: now,
            });
            current.disabled_reason = Some(reason.clone());
            tracing::warn!(tenant.id = %sub.tenant_id, subscription.id = %sub.id, reason, "webhook endpoint disabled");
        }
        current.revision += 1;
        current.updated_at = now;
        match services.store.update_subscription(&current, None).await {
            Err(CoreError::Conflict(_)) => continue,
            Ok(()) if disabling => {
                notify_disabled(services, &current).await;
                return Ok(());
            }
            other => return other,
        }
    }
    Ok(())
}

/// Tells the subscriber that Wharf paused a subscription; a failure to mail is logged, as the
/// reason also stays on the subscription.
async fn notify_disabled(services: &Services, sub: &Subscription) {
    let Ok(subscriber) = services.store.get_subscriber(&sub.subscriber_id).await else {
        return;
    };
    let reason = sub
        .disabled_reason
        .as_deref()
        .unwrap_or("deliveries kept failing");
    let body = format!(
        "Wharf paused your subscription {} to feed {}: {reason}.\n\n\
         Fix the endpoint, then resume the subscription with PATCH /v1/subscriptions/{} {{\"status\": \"active\"}}.\n\
         Records produced meanwhile can be delivered again with POST /v1/subscriptions/{}/replay.\n",
        sub.id, sub.feed_id, sub.id, sub.id
    );
    if let Err(e) = services
        .mailer
        .send(
            &subscriber.email,
            "Your Wharf subscription was paused",
            &body,
        )
        .await
    {
        tracing::warn!(subscription.id = %sub.id, error = %e, "could not tell the subscriber that the subscription was paused");
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{at, sub};
    use super::super::send::judge;
    use super::*;
    use wharf_core::domain::SendOutcome;
    use wharf_core::{DeliveryId, RecordId};

    fn job(records: usize) -> Job {
        Job {
            id: DeliveryId::new(),
            records: (0..records).map(|_| RecordId::new()).collect(),
            positions: (1..=records as u64).collect(),
            body: b"{}".to_vec(),
        }
    }

    fn answered(status: u16, retry_after: Option<u64>) -> Verdict {
        judge(SendOutcome::Answered {
            status,
            retry_after,
        })
    }

    #[test]
    fn acknowledged_records_are_counted_and_failures_parked_for_the_schedule() {
        let config = DeliveryConfig::default();
        let sub = sub(None, None);
        let now = at(0);
        let settled = settle(
            &sub,
            vec![
                (job(3), answered(200, None)),
                (job(1), answered(500, None)),
                (
                    job(2),
                    judge(SendOutcome::Failed("could not connect".into())),
                ),
            ],
            &config,
            now,
        );
        assert_eq!(settled.acknowledged, Counted::usage(3));
        assert_eq!(settled.parked.len(), 2);
        assert!(
            settled
                .parked
                .iter()
                .all(|p| p.attempts == 1 && p.next_attempt_at == now + config.retry_schedule[0])
        );
        let statuses: Vec<AttemptStatus> = settled.log.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses,
            [
                AttemptStatus::Delivered,
                AttemptStatus::Failed,
                AttemptStatus::Failed
            ]
        );
        assert_eq!(
            settled.health,
            Health {
                any_ok: true,
                any_failed: true,
                gone: false
            }
        );
    }

    #[test]
    fn a_410_disables_and_parks_nothing() {
        let settled = settle(
            &sub(None, None),
            vec![(job(1), answered(410, None))],
            &DeliveryConfig::default(),
            at(0),
        );
        assert!(settled.parked.is_empty());
        assert_eq!(settled.acknowledged, Counted::default());
        assert!(settled.health.gone);
        assert_eq!(settled.log[0].status, AttemptStatus::Disabled);
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only_and_never_shortens_the_wait() {
        let config = DeliveryConfig::default();
        let first = config.retry_schedule[0];
        let now = at(0);
        let wait = |verdict: Verdict| match verdict {
            Verdict::Failed { retry_after, .. } => {
                next_attempt(&config, 1, retry_after, now).map(|t| t - now)
            }
            _ => None,
        };
        let long = first.as_secs() + 60;
        assert_eq!(
            wait(answered(429, Some(long))),
            Some(time::Duration::seconds(long as i64))
        );
        assert_eq!(
            wait(answered(503, Some(long))),
            Some(time::Duration::seconds(long as i64))
        );
        assert_eq!(
            wait(answered(500, Some(long))),
            Some(first.try_into().unwrap_or_default())
        );
        assert_eq!(
            wait(answered(429, Some(0))),
            Some(first.try_into().unwrap_or_default())
        );
    }

    #[test]
    fn the_last_scheduled_failure_gives_up() {
        let config = DeliveryConfig::default();
        let spent = config.retry_schedule.len() as u32 + 1;
        assert_eq!(next_attempt(&config, spent, None, at(0)), None);
        assert!(next_attempt(&config, spent - 1, None, at(0)).is_some());
    }
}
