//! Webhook and email delivery. Each subscription keeps a position in its feed's output; a pass
//! reads the records after it, groups them (one per message, or batches), signs each webhook
//! POST with every live secret (Standard Webhooks) or mails it, sends with bounded concurrency, and then moves the
//! position, adds the acknowledged records to usage and parks the failures for retry — all
//! in one atomic write, so each record is counted once whatever crashes or retries happen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use wharf_core::domain::{AttemptStatus, DeliveryAttempt, PendingDelivery, SendOutcome};
use wharf_core::domain::{Channel, Email, OutputRecord, Subscription, SubscriptionStatus};
use wharf_core::pipeline::SubscriptionFilter;
use wharf_core::{CoreError, DeliveryId, RecordId, Services, Timestamp, webhook};

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

/// A record as a webhook carries it.
#[derive(serde::Serialize)]
struct Payload<'a> {
    id: &'a RecordId,
    feed_id: &'a wharf_core::FeedId,
    pipeline_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    ts: Timestamp,
    data: &'a serde_json::Value,
}

fn payload(r: &OutputRecord) -> Payload<'_> {
    Payload {
        id: &r.id,
        feed_id: &r.feed_id,
        pipeline_version: r.pipeline_version,
        ts: r.ts,
        data: &r.data,
    }
}

/// One record's JSON as a webhook carries it (also the body the aws shape's topics publish).
pub fn record_json(r: &OutputRecord) -> Result<String, CoreError> {
    serde_json::to_string(&payload(r)).map_err(CoreError::internal)
}

/// The body of one delivery: an object for a single record, an array for a batch.
fn body(records: &[&OutputRecord], batched: bool) -> Result<Vec<u8>, CoreError> {
    if batched {
        serde_json::to_vec(&records.iter().map(|r| payload(r)).collect::<Vec<_>>())
    } else {
        serde_json::to_vec(&payload(records[0]))
    }
    .map_err(CoreError::internal)
}

/// The id of a delivery of `records` to `sub`: stable across retries.
pub fn delivery_id(sub: &Subscription, records: &[RecordId]) -> DeliveryId {
    match records {
        [one] => DeliveryId::from_uuid(wharf_core::id::derive(&[
            "del",
            one.as_str(),
            sub.id.as_str(),
        ])),
        many => {
            let first = many.first().map(RecordId::as_str).unwrap_or("");
            let last = many.last().map(RecordId::as_str).unwrap_or("");
            let n = many.len().to_string();
            DeliveryId::from_uuid(wharf_core::id::derive(&[
                "batch",
                sub.id.as_str(),
                first,
                last,
                &n,
            ]))
        }
    }
}

/// What one attempt came to.
enum Verdict {
    Delivered(Option<u16>),
    Gone(u16),
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<u64>,
    },
}

fn judge(outcome: SendOutcome) -> Verdict {
    match outcome {
        SendOutcome::Answered { status, .. } if (200..300).contains(&status) => {
            Verdict::Delivered(Some(status))
        }
        SendOutcome::Answered { status: 410, .. } => Verdict::Gone(410),
        SendOutcome::Answered {
            status,
            retry_after,
        } => Verdict::Failed {
            status: Some(status),
            error: format!("the endpoint answered {status}"),
            retry_after: retry_after.filter(|_| status == 429 || status == 503),
        },
        SendOutcome::Failed(error) => Verdict::Failed {
            status: None,
            error,
            retry_after: None,
        },
    }
}

/// The live signing secrets of a subscription, newest first.
async fn secrets(
    services: &Services,
    sub: &Subscription,
    now: Timestamp,
) -> Result<Vec<String>, CoreError> {
    let sealed = services
        .store
        .get_signing_secrets(&sub.tenant_id, &sub.id)
        .await?;
    sealed
        .iter()
        .filter(|s| s.expires_at.is_none_or(|t| t > now))
        .map(|s| services.secrets.open(&s.sealed))
        .collect()
}

struct Job {
    id: DeliveryId,
    records: Vec<RecordId>,
    positions: Vec<u64>,
    body: Vec<u8>,
}

/// Where a subscription's deliveries go.
#[derive(Clone)]
enum Transport {
    Webhook { url: String, secrets: Vec<String> },
    Email { address: Email },
}

/// The transport of a subscription's channel, or `None` for channels delivered otherwise.
async fn transport(
    services: &Services,
    sub: &Subscription,
    now: Timestamp,
) -> Result<Option<Transport>, CoreError> {
    Ok(match &sub.channel {
        Channel::Webhook { url } => Some(Transport::Webhook {
            url: url.as_str().to_owned(),
            secrets: secrets(services, sub, now).await?,
        }),
        Channel::Email { address } => Some(Transport::Email {
            address: address.clone(),
        }),
        _ => None,
    })
}

async fn send_one(
    services: &Services,
    transport: &Transport,
    sub: &Subscription,
    job: &Job,
    timestamp: i64,
    timeout: Duration,
) -> Verdict {
    match transport {
        Transport::Webhook { url, secrets } => {
            match webhook::headers(secrets, job.id.as_str(), timestamp, &job.body) {
                Ok(headers) => judge(
                    services
                        .http
                        .post(url, &headers, job.body.clone(), timeout)
                        .await,
                ),
                Err(e) => Verdict::Failed {
                    status: None,
                    error: e,
                    retry_after: None,
                },
            }
        }
        Transport::Email { address } => {
            let n = job.records.len();
            let subject = format!(
                "{n} new record{} from feed {}",
                if n == 1 { "" } else { "s" },
                sub.feed_id
            );
            let text = serde_json::from_slice::<serde_json::Value>(&job.body)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or_default();
            let body = format!(
                "{text}\n\nDelivery {} of subscription {}.\n",
                job.id, sub.id
            );
            match tokio::time::timeout(timeout, services.mailer.send(address, &subject, &body))
                .await
            {
                Ok(Ok(())) => Verdict::Delivered(None),
                Ok(Err(error)) => Verdict::Failed {
                    status: None,
                    error: error.reason(),
                    retry_after: None,
                },
                Err(_) => Verdict::Failed {
                    status: None,
                    error: "the mail server did not answer in time".into(),
                    retry_after: None,
                },
            }
        }
    }
}

/// Sends `jobs` with at most `in_flight` at once; answers come back in job order.
async fn send_all(
    services: &Services,
    transport: &Transport,
    sub: &Subscription,
    jobs: Vec<Job>,
    config: &DeliveryConfig,
    now: Timestamp,
) -> Result<Vec<(Job, Verdict)>, CoreError> {
    let timestamp = now.unix_timestamp();
    let jobs: Vec<Arc<Job>> = jobs.into_iter().map(Arc::new).collect();
    let mut results: Vec<Option<Verdict>> = (0..jobs.len()).map(|_| None).collect();
    let mut set = JoinSet::new();
    for (i, job) in jobs.iter().enumerate() {
        if set.len() >= config.in_flight.max(1)
            && let Some(Ok((j, v))) = set.join_next().await
        {
            results[j] = Some(v);
        }
        let (services, transport, sub, job, timeout) = (
            services.clone(),
            transport.clone(),
            sub.clone(),
            job.clone(),
            config.timeout,
        );
        set.spawn(async move {
            (
                i,
                send_one(&services, &transport, &sub, &job, timestamp, timeout).await,
            )
        });
    }
    while let Some(joined) = set.join_next().await {
        let (j, v) = joined.map_err(CoreError::internal)?;
        results[j] = Some(v);
    }
    Ok(jobs
        .into_iter()
        .map(|job| {
            Arc::try_unwrap(job).unwrap_or_else(|shared| Job {
                id: shared.id.clone(),
                records: shared.records.clone(),
                positions: shared.positions.clone(),
                body: shared.body.clone(),
            })
        })
        .zip(results)
        .map(|(job, v)| {
            (
                job,
                v.unwrap_or(Verdict::Failed {
                    status: None,
                    error: "not sent".into(),
                    retry_after: None,
                }),
            )
        })
        .collect())
}

fn next_attempt(
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

/// One pass over a webhook or email subscription: delivers what its feed produced since its
/// position. Returns the number of records the pass moved past.
pub async fn deliver_push(
    services: &Services,
    sub: &Subscription,
    config: &DeliveryConfig,
) -> Result<usize, CoreError> {
    if !matches!(sub.channel, Channel::Webhook { .. } | Channel::Email { .. })
        || sub.status != SubscriptionStatus::Active
    {
        return Ok(0);
    }
    let from = services
        .store
        .delivery_position(&sub.tenant_id, &sub.id)
        .await?;
    let rows = services
        .store
        .output_after(&sub.tenant_id, &sub.feed_id, from, config.chunk)
        .await?;
    let Some((last, _)) = rows.last() else {
        return Ok(0);
    };
    let now = services.clock.now();
    let filter = SubscriptionFilter::of(sub);
    let wanted: Vec<&(u64, OutputRecord)> = rows
        .iter()
        .filter(|(_, r)| SubscriptionFilter::admits(filter.as_ref(), &r.data))
        .collect();
    let mut to = *last;
    let mut groups: Vec<Vec<&(u64, OutputRecord)>> = Vec::new();
    match sub.batch {
        Some(batch) => {
            for chunk in wanted.chunks(batch.max_records.max(1) as usize) {
                groups.push(chunk.to_vec());
            }
            // A partial last batch waits for more records until its oldest has waited max_wait_ms.
            let caught_up = rows.len() < config.chunk;
            if let Some(tail) = groups.last() {
                let oldest = tail[0].1.created_at;
                let partial = tail.len() < batch.max_records as usize;
                if caught_up
                    && partial
                    && oldest + Duration::from_millis(u64::from(batch.max_wait_ms)) > now
                {
                    let first_held = tail[0].0;
                    to = rows
                        .iter()
                        .take_while(|(p, _)| *p < first_held)
                        .last()
                        .map_or(from, |(p, _)| *p);
                    groups.pop();
                }
            }
        }
        None => groups.extend(wanted.iter().map(|r| vec![*r])),
    }
    if to == from {
        return Ok(0);
    }
    let jobs = groups
        .iter()
        .map(|g| {
            let records: Vec<&OutputRecord> = g.iter().map(|(_, r)| r).collect();
            let ids: Vec<RecordId> = records.iter().map(|r| r.id.clone()).collect();
            Ok(Job {
                id: delivery_id(sub, &ids),
                body: body(&records, sub.batch.is_some())?,
                records: ids,
                positions: g.iter().map(|(p, _)| *p).collect(),
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    let results = if jobs.is_empty() {
        vec![]
    } else {
        match transport(services, sub, now).await? {
            Some(t) => send_all(services, &t, sub, jobs, config, now).await?,
            None => return Ok(0),
        }
    };
    let mut acknowledged = 0u64;
    let mut parked = Vec::new();
    let mut log = Vec::new();
    let mut gone = false;
    for (job, verdict) in results {
        let next = match &verdict {
            Verdict::Failed { retry_after, .. } => next_attempt(config, 1, *retry_after, now),
            _ => None,
        };
        log.push(log_entry(sub, &job, 1, &verdict, next, now));
        match verdict {
            Verdict::Delivered(_) => acknowledged += job.records.len() as u64,
            Verdict::Gone(_) => gone = true,
            Verdict::Failed { .. } => {
                if let Some(next) = next {
                    parked.push(PendingDelivery {
                        id: job.id,
                        tenant_id: sub.tenant_id.clone(),
                        subscription_id: sub.id.clone(),
                        record_ids: job.records,
                        positions: job.positions,
                        attempts: 1,
                        next_attempt_at: next,
                        first_failed_at: now,
                        replay: false,
                    });
                }
            }
        }
    }
    match services
        .store
        .advance(
            &sub.tenant_id,
            &sub.id,
            from,
            to,
            acknowledged,
            now,
            &parked,
        )
        .await
    {
        Ok(()) => {}
        // Another pass moved this subscription on; what it sent counts, not ours.
        Err(CoreError::Conflict(_)) => return Ok(0),
        Err(e) => return Err(e),
    }
    services.store.log_attempts(&sub.tenant_id, &log).await?;
    let any_ok = log.iter().any(|a| a.status == AttemptStatus::Delivered);
    let any_failed = log
        .iter()
        .any(|a| matches!(a.status, AttemptStatus::Failed | AttemptStatus::GaveUp));
    endpoint_health(services, sub, any_ok, any_failed, gone, config, now).await?;
    Ok(rows.iter().filter(|(p, _)| *p <= to).count())
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

/// Retries the pending deliveries that are due. Returns how many were attempted.
pub async fn retry_due(
    services: &Services,
    config: &DeliveryConfig,
    limit: usize,
) -> Result<usize, CoreError> {
    let now = services.clock.now();
    let due = services.store.due_deliveries(now, limit).await?;
    let mut by_sub: HashMap<_, Vec<PendingDelivery>> = HashMap::new();
    for d in due.iter().cloned() {
        by_sub
            .entry((d.tenant_id.clone(), d.subscription_id.clone()))
            .or_default()
            .push(d);
    }
    for ((tenant, sub_id), pending) in by_sub {
        let sub = match services.store.get_subscription(&tenant, &sub_id).await {
            Ok(s) => s,
            Err(CoreError::NotFound(_)) => {
                for d in &pending {
                    services.store.drop_pending(&d.id).await?;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        retry_subscription(services, &sub, pending, config, now).await?;
    }
    Ok(due.len())
}

async fn retry_subscription(
    services: &Services,
    sub: &Subscription,
    pending: Vec<PendingDelivery>,
    config: &DeliveryConfig,
    now: Timestamp,
) -> Result<(), CoreError> {
    let transport = match (&sub.channel, sub.status) {
        (_, SubscriptionStatus::Cancelled) | (Channel::Pull {} | Channel::Websocket {}, _) => {
            for d in &pending {
                services.store.drop_pending(&d.id).await?;
            }
            return Ok(());
        }
        (_, SubscriptionStatus::Paused) => {
            for mut d in pending {
                d.next_attempt_at = now + Duration::from_secs(60);
                services.store.reschedule(&d).await?;
            }
            return Ok(());
        }
        _ => match transport(services, sub, now).await? {
            Some(t) => t,
            None => return Ok(()),
        },
    };
    let mut jobs = Vec::new();
    let mut kept = Vec::new();
    for d in pending {
        // Read by position; the ids make sure each position still holds its record.
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
    if jobs.is_empty() {
        return Ok(());
    }
    let results = send_all(services, &transport, sub, jobs, config, now).await?;
    let (mut any_ok, mut any_failed, mut gone) = (false, false, false);
    let mut log = Vec::new();
    for ((job, verdict), mut d) in results.into_iter().zip(kept) {
        let attempt_no = d.attempts + 1;
        let next = match &verdict {
            Verdict::Failed { retry_after, .. } => {
                next_attempt(config, attempt_no, *retry_after, now)
            }
            _ => None,
        };
        log.push(log_entry(sub, &job, attempt_no, &verdict, next, now));
        match verdict {
            Verdict::Delivered(_) => {
                any_ok = true;
                services
                    .store
                    .ack_pending(&d, job.records.len() as u64, now)
                    .await?;
            }
            Verdict::Gone(_) => {
                gone = true;
                services.store.drop_pending(&d.id).await?;
            }
            Verdict::Failed { .. } => {
                any_failed = true;
                match next {
                    Some(next) => {
                        d.attempts = attempt_no;
                        d.next_attempt_at = next;
                        services.store.reschedule(&d).await?;
                    }
                    None => services.store.drop_pending(&d.id).await?,
                }
            }
        }
    }
    services.store.log_attempts(&sub.tenant_id, &log).await?;
    endpoint_health(services, sub, any_ok, any_failed, gone, config, now).await
}

/// The delivery-log row of one attempt; `next` is when a failed delivery is tried again
/// (`None` after a failure: given up).
fn log_entry(
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
async fn endpoint_health(
    services: &Services,
    sub: &Subscription,
    any_ok: bool,
    any_failed: bool,
    gone: bool,
    config: &DeliveryConfig,
    now: Timestamp,
) -> Result<(), CoreError> {
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
