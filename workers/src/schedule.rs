//! Scheduled windows. Windows are aligned to multiples of the rule's `every` (UTC epoch), each
//! covering the `window` before its end. A window is closed once its end plus a grace period
//! has passed: its records are run through the rules before the window, grouped and folded,
//! and each group becomes one output record (id derived from feed, rule, window start and
//! group, so closing a window twice writes nothing new). The feed's watermark moves only after
//! the outputs are stored: a restart resumes at the first window not yet closed, neither
//! skipping nor doubling one.

use crate::lanes::Lanes;
use crate::process::{References, feeds_of_tenant_with_windows};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use wharf_core::domain::{Feed, FeedError, OutputRecord};
use wharf_core::pipeline::{Accumulated, Compiled, Outcome, RuleError, Runner, WindowSpec};
use wharf_core::ports::{off_runtime, tenant_lane};
use wharf_core::{CoreError, FeedId, Services, Timestamp};

/// How long after a window's end records may still arrive for it.
pub const GRACE: Duration = Duration::from_secs(2);
/// Most windows one feed closes in one pass (catching up after downtime goes on next pass).
const MAX_WINDOWS_PER_PASS: usize = 100;

fn floor_to(t: Timestamp, every: Duration) -> Timestamp {
    let every = every.as_secs().max(1) as i64;
    let secs = t.unix_timestamp().div_euclid(every) * every;
    Timestamp::from_unix_timestamp(secs).unwrap_or(t)
}

/// Feeds whose windows are closed at once, overall and per tenant.
const FEEDS_AT_ONCE: usize = 16;
const FEEDS_PER_TENANT: usize = 2;

/// Closes windows as they come due, each feed's in a task of its own: a feed with expensive
/// rules or many records delays its own windows (and, beyond its tenant's share, its
/// tenant's), never another tenant's.
pub struct Windows {
    lanes: Arc<Lanes<FeedId>>,
    closed: Arc<AtomicUsize>,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            lanes: Lanes::new(FEEDS_AT_ONCE, FEEDS_PER_TENANT),
            closed: Arc::default(),
        }
    }
}

impl Windows {
    /// Starts closing the due windows of every windowed feed not being closed; answers the
    /// tasks started.
    pub async fn start_due(&self, services: &Services) -> Result<Vec<JoinHandle<()>>, CoreError> {
        let mut started = Vec::new();
        for feed in feeds_of_tenant_with_windows(services.store.as_ref()).await? {
            let (tenant, id) = (feed.tenant_id.clone(), feed.id.clone());
            let (services, closed) = (services.clone(), self.closed.clone());
            let task = self.lanes.spawn(&tenant, id, async move {
                match close_feed_windows(&services, &feed).await {
                    Ok(n) => {
                        closed.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(feed.id = %feed.id, error = %e, "closing windows failed");
                    }
                }
            });
            started.extend(task);
        }
        Ok(started)
    }

    /// Closes every due window of every windowed feed and waits for it (a schedule tick).
    /// Returns how many windows were closed.
    pub async fn close_due(&self, services: &Services) -> Result<usize, CoreError> {
        let before = self.closed.load(Ordering::Relaxed);
        for task in self.start_due(services).await? {
            task.await.map_err(CoreError::internal)?;
        }
        Ok(self.closed.load(Ordering::Relaxed).saturating_sub(before))
    }

    /// Completes once no feed's windows are being closed.
    pub async fn until_idle(&self) {
        self.lanes.until_idle().await;
    }
}

/// Closes the due windows of one feed.
#[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %feed.tenant_id, feed.id = %feed.id))]
pub async fn close_feed_windows(services: &Services, feed: &Feed) -> Result<usize, CoreError> {
    let compiled = Arc::new(Compiled::new(
        &feed.pipeline,
        services.settings.limits.budgets,
    ));
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
        lane: tenant_lane(&feed.tenant_id),
        lookup: References::of(services, &feed.tenant_id),
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
    compiled: &'a Arc<Compiled>,
    spec: &'a WindowSpec,
    lane: String,
    lookup: References,
    now: Timestamp,
    expires_at: Timestamp,
}

impl Closing<'_> {
    fn runner(&self) -> Runner<'_> {
        Runner {
            compute: self.services.compute.as_ref(),
            lane: &self.lane,
            lookup: &self.lookup,
        }
    }

    /// Closes the window `start..end`: its records folded by group, each group's aggregate
    /// through the rules after the window, stored with the errors met on the way. Every
    /// expression runs in the tenant's compute lane.
    async fn close(&self, start: Timestamp, end: Timestamp) -> Result<(), CoreError> {
        let (feed, store) = (self.feed, &self.services.store);
        let raw = store
            .raw_between(&feed.tenant_id, &feed.source_id, start, end)
            .await?;
        let data = raw.iter().map(|r| r.data.clone()).collect();
        let outcomes = self.compiled.apply_all(data, &self.runner()).await?;
        let mut errors = Vec::new();
        let mut kept = Vec::new();
        for (r, outcome) in raw.iter().zip(outcomes) {
            match outcome {
                Ok(Outcome::Keep(data)) => kept.push((r.id.clone(), data)),
                Ok(Outcome::Drop) => {}
                Err(e) => errors.push(self.error(Some(r.id.clone()), e)),
            }
        }
        let outputs = self.outputs(kept, start, end, &mut errors).await?;
        if !errors.is_empty() {
            store.record_feed_errors(&feed.tenant_id, &errors).await?;
        }
        if !outputs.is_empty() && store.append_output(&outputs).await? > 0 {
            self.services.notifier.outputs_appended();
            self.services.notifier.feed_appended(&feed.id);
        }
        Ok(())
    }

    /// The window's output records, one per group the rules after the window keep.
    async fn outputs(
        &self,
        kept: Vec<(wharf_core::RecordId, serde_json::Value)>,
        start: Timestamp,
        end: Timestamp,
        errors: &mut Vec<FeedError>,
    ) -> Result<Vec<OutputRecord>, CoreError> {
        let (from, to) = (wharf_core::rfc3339(start), wharf_core::rfc3339(end));
        let compiled = self.compiled.clone();
        let (folded, failed) = off_runtime(self.services.compute.as_ref(), &self.lane, move || {
            let Some(spec) = &compiled.window else {
                return (Ok(Vec::new()), Vec::new());
            };
            let mut acc = Accumulated::default();
            let mut failed = Vec::new();
            for (id, data) in kept {
                if let Err(e) = spec.accumulate(&mut acc, &data) {
                    failed.push((id, e));
                }
            }
            (spec.finish(acc, &from, &to), failed)
        })
        .await?;
        errors.extend(failed.into_iter().map(|(id, e)| self.error(Some(id), e)));
        let groups = match folded {
            Ok(groups) => groups,
            Err(e) => {
                errors.push(self.error(None, e));
                return Ok(Vec::new());
            }
        };
        let (keys, records): (Vec<String>, Vec<serde_json::Value>) = groups.into_iter().unzip();
        let outcomes = self
            .compiled
            .apply_all_after_window(records, &self.runner())
            .await?;
        let feed = self.feed;
        let mut outputs = Vec::new();
        for (key, outcome) in keys.iter().zip(outcomes) {
            match outcome {
                Ok(Outcome::Keep(data)) => outputs.push(OutputRecord {
                    id: OutputRecord::window_id_for(&feed.id, self.spec.rule, start, key),
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
        Ok(outputs)
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
