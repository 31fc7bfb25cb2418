//! Sending a pass's deliveries: each webhook POST signed with every live secret (Standard
//! Webhooks) or each mail sent, with bounded concurrency, and what each attempt came to.

use super::{DeliveryConfig, Job};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use wharf_core::domain::{Channel, Email, SendOutcome, Subscription};
use wharf_core::{CoreError, Services, Timestamp, webhook};

/// What one attempt came to.
pub(super) enum Verdict {
    Delivered(Option<u16>),
    Gone(u16),
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<u64>,
    },
}

pub(super) fn judge(outcome: SendOutcome) -> Verdict {
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

/// Where a subscription's deliveries go.
#[derive(Clone)]
pub(super) enum Transport {
    Webhook { url: String, secrets: Vec<String> },
    Email { address: Email },
}

/// The transport of a subscription's channel, or `None` for channels delivered otherwise.
pub(super) async fn transport(
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
pub(super) async fn send_all(
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
