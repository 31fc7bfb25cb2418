//! Scheduled windows. Windows are aligned to multiples of the rule's `every` (UTC epoch), each
//! covering the `window` before its end. A window is closed once its end plus a grace period
//! has passed: its records are run through the rules before the window, grouped and folded,
//! and each group becomes one output record (id derived from feed, rule, window start and
//! group, so closing a window twice writes nothing new). The feed's watermark moves only after
//! the outputs are stored: a restart resumes at the first window not yet closed, neither
//! skipping nor doubling one.

use crate::process::{References, feeds_of_tenant_with_windows};
use std::time::Duration;
use wharf_core::domain::{Feed, FeedError, OutputRecord};
use wharf_core::pipeline::{Accumulated, Compiled, Outcome};
use wharf_core::{CoreError, Services, Timestamp};

/// How long after a window's end records may still arrive for it.
pub const GRACE: Duration = Duration::from_secs(2);
/// Most windows one feed closes in one pass (catching up after downtime goes on next pass).
const MAX_WINDOWS_PER_PASS: usize = 100;

fn floor_to(t: Timestamp, every: Duration) -> Timestamp {
    let every = every.as_secs().max(1) as i64;
    let secs = t.unix_timestamp().div_euclid(every) * every;
    Timestamp::from_unix_timestamp(secs).unwrap_or(t)
}

/// Closes every due window of every windowed feed. Returns how many windows were closed.
pub async fn close_due_windows(services: &Services) -> Result<usize, CoreError> {
    let mut closed = 0;
    for feed in feeds_of_tenant_with_windows(services.store.as_ref()).await? {
        match close_feed_windows(services, &feed).await {
            Ok(n) => closed += n,
            Err(e) => tracing::warn!(feed.id = %feed.id, error = %e, "closing windows failed"),
        }
    }
    Ok(closed)
}

/// Closes the due windows of one feed.
pub async fn close_feed_windows(services: &Services, feed: &Feed) -> Result<usize, CoreError> {
    let compiled = Compiled::new(&feed.pipeline);
    let Some(spec) = &compiled.window else {
        return Ok(0);
    };
    let now = services.clock.now();
    let last_due = floor_to(now - GRACE, spec.every);
    let watermark = match services
        .store
        .window_watermark(&feed.tenant_id, &feed.id)
        .await?
    {
        Some(w) => w,
        None => {
            // A new window rule starts with the window now open; history is not backfilled.
            services
                .store
                .set_window_watermark(&feed.tenant_id, &feed.id, last_due)
                .await?;
            return Ok(0);
        }
    };
    let source = services
        .store
        .get_source(&feed.tenant_id, &feed.source_id)
        .await?;
    let lookup = References {
        store: services.store.clone(),
        tenant: feed.tenant_id.clone(),
    };
    let mut end = watermark + spec.every;
    let mut closed = 0;
    while end <= last_due && closed < MAX_WINDOWS_PER_PASS {
        let start = end - spec.window;
        let raw = services
            .store
            .raw_between(&feed.tenant_id, &feed.source_id, start, end)
            .await?;
        let mut acc = Accumulated::default();
        let mut errors = Vec::new();
        let fail = |record, e: wharf_core::pipeline::RuleError| FeedError {
            feed_id: feed.id.clone(),
            record_id: record,
            pipeline_version: feed.pipeline.version,
            rule: e.rule,
            message: e.message,
            at: now,
        };
        for r in &raw {
            match compiled.apply(r.data.clone(), &lookup).await {
                Ok(Outcome::Keep(data)) => {
                    if let Err(e) = spec.accumulate(&mut acc, &data) {
                        errors.push(fail(Some(r.id.clone()), e));
                    }
                }
                Ok(Outcome::Drop) => {}
                Err(e) => errors.push(fail(Some(r.id.clone()), e)),
            }
        }
        let fmt = |t: Timestamp| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let mut outputs = Vec::new();
        match spec.finish(acc, &fmt(start), &fmt(end)) {
            Ok(groups) => {
                for (key, record) in groups {
                    match compiled.apply_after_window(record, &lookup).await {
                        Ok(Outcome::Keep(data)) => outputs.push(OutputRecord {
                            id: OutputRecord::window_id_for(&feed.id, spec.rule, start, &key),
                            feed_id: feed.id.clone(),
                            tenant_id: feed.tenant_id.clone(),
                            pipeline_version: feed.pipeline.version,
                            ts: end,
                            created_at: now,
                            expires_at: now
                                + time::Duration::days(i64::from(source.retention_days)),
                            data,
                        }),
                        Ok(Outcome::Drop) => {}
                        Err(e) => errors.push(fail(None, e)),
                    }
                }
            }
            Err(e) => errors.push(fail(None, e)),
        }
        if !errors.is_empty() {
            services
                .store
                .record_feed_errors(&feed.tenant_id, &errors)
                .await?;
        }
        if !outputs.is_empty() && services.store.append_output(&outputs).await? > 0 {
            services.notifier.outputs_appended();
        }
        services
            .store
            .set_window_watermark(&feed.tenant_id, &feed.id, end)
            .await?;
        closed += 1;
        end += spec.every;
    }
    Ok(closed)
}
