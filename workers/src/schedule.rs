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
use wharf_core::pipeline::{Accumulated, Compiled, Outcome, RuleError, WindowSpec};
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
#[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %feed.tenant_id, feed.id = %feed.id))]
pub async fn close_feed_windows(services: &Services, feed: &Feed) -> Result<usize, CoreError> {
    let compiled = Compiled::new(&feed.pipeline);
    let Some(spec) = &compiled.window else {
        return Ok(0);
    };
    let store = &services.store;
    let now = services.clock.now();
    let last_due = floor_to(now - GRACE, spec.every);
    let Some(watermark) = store.window_watermark(&feed.tenant_id, &feed.id).await? else {
        // A new window rule starts with the window now open; history is not backfilled.
        store
            .set_window_watermark(&feed.tenant_id, &feed.id, last_due)
            .await?;
        return Ok(0);
    };
    let source = store.get_source(&feed.tenant_id, &feed.source_id).await?;
    let closing = Closing {
        services,
        feed,
        compiled: &compiled,
        spec,
        lookup: References {
            store: store.clone(),
            tenant: feed.tenant_id.clone(),
        },
        now,
        expires_at: now + time::Duration::days(i64::from(source.retention_days)),
    };
    let mut end = watermark + spec.every;
    let mut closed = 0;
    while end <= last_due && closed < MAX_WINDOWS_PER_PASS {
        closing.close(end - spec.window, end).await?;
        // Only after the window's outputs are stored: a restart resumes at this window.
        store
            .set_window_watermark(&feed.tenant_id, &feed.id, end)
            .await?;
        closed += 1;
        end += spec.every;
    }
    Ok(closed)
}

/// What closing one feed's windows needs.
struct Closing<'a> {
    services: &'a Services,
    feed: &'a Feed,
    compiled: &'a Compiled,
    spec: &'a WindowSpec,
    lookup: References,
    now: Timestamp,
    expires_at: Timestamp,
}

impl Closing<'_> {
    /// Closes the window `start..end`: its records folded by group, each group's aggregate
    /// through the rules after the window, stored with the errors met on the way.
    async fn close(&self, start: Timestamp, end: Timestamp) -> Result<(), CoreError> {
        let (feed, store) = (self.feed, &self.services.store);
        let raw = store
            .raw_between(&feed.tenant_id, &feed.source_id, start, end)
            .await?;
        let mut acc = Accumulated::default();
        let mut errors = Vec::new();
        for r in &raw {
            match self.compiled.apply(r.data.clone(), &self.lookup).await {
                Ok(Outcome::Keep(data)) => {
                    if let Err(e) = self.spec.accumulate(&mut acc, &data) {
                        errors.push(self.error(Some(r.id.clone()), e));
                    }
                }
                Ok(Outcome::Drop) => {}
                Err(e) => errors.push(self.error(Some(r.id.clone()), e)),
            }
        }
        let outputs = self.outputs(acc, start, end, &mut errors).await;
        if !errors.is_empty() {
            store.record_feed_errors(&feed.tenant_id, &errors).await?;
        }
        if !outputs.is_empty() && store.append_output(&outputs).await? > 0 {
            self.services.notifier.outputs_appended();
        }
        Ok(())
    }

    /// The window's output records, one per group the rules after the window keep.
    async fn outputs(
        &self,
        acc: Accumulated,
        start: Timestamp,
        end: Timestamp,
        errors: &mut Vec<FeedError>,
    ) -> Vec<OutputRecord> {
        let fmt = |t: Timestamp| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let groups = match self.spec.finish(acc, &fmt(start), &fmt(end)) {
            Ok(groups) => groups,
            Err(e) => {
                errors.push(self.error(None, e));
                return Vec::new();
            }
        };
        let feed = self.feed;
        let mut outputs = Vec::new();
        for (key, record) in groups {
            match self.compiled.apply_after_window(record, &self.lookup).await {
                Ok(Outcome::Keep(data)) => outputs.push(OutputRecord {
                    id: OutputRecord::window_id_for(&feed.id, self.spec.rule, start, &key),
                    feed_id: feed.id.clone(),
                    tenant_id: feed.tenant_id.clone(),
                    pipeline_version: feed.pipeline.version,
                    ts: end,
                    created_at: self.now,
                    expires_at: self.expires_at,
                    data,
                }),
                Ok(Outcome::Drop) => {}
                Err(e) => errors.push(self.error(None, e)),
            }
        }
        outputs
    }

    fn error(&self, record: Option<wharf_core::RecordId>, e: RuleError) -> FeedError {
        FeedError {
            feed_id: self.feed.id.clone(),
            record_id: record,
            pipeline_version: self.feed.pipeline.version,
            rule: e.rule,
            message: e.message,
            at: self.now,
        }
    }
}
