//! Stateless processing: each new raw record runs through the stateless rules of every
//! published feed of its source. Output ids derive from (feed, pipeline version, raw record),
//! so processing a record twice writes the same output, never a second one. A record a rule
//! fails on goes to the feed's error list; the rest of the batch carries on.

use async_trait::async_trait;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use wharf_core::domain::Endpoint;
use wharf_core::domain::{Feed, FeedError, FeedStatus, OutputRecord, RawRecord};
use wharf_core::limits::Budgets;
use wharf_core::pipeline::{Compiled, LoadedVersion, Lookup, Outcome, Runner};
use wharf_core::ports::{Store, tenant_lane};
use wharf_core::{CoreError, FeedId, PageRequest, Services, SourceId, TenantId};

/// What one batch produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Processed {
    /// New output records stored.
    pub outputs: usize,
    /// Records a rule failed on.
    pub errors: usize,
}

/// Compiled pipelines, kept across batches (keyed by feed and pipeline version).
#[derive(Default)]
pub struct Processor {
    compiled: Mutex<HashMap<(FeedId, u32), Arc<Compiled>>>,
}

/// What one tenant's records of a batch made.
#[derive(Default)]
struct Part {
    outputs: Vec<OutputRecord>,
    errors: Vec<FeedError>,
}

impl Processor {
    fn compiled(&self, feed: &Feed, budgets: Budgets) -> Arc<Compiled> {
        let key = (feed.id.clone(), feed.pipeline.version);
        let mut cache = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cache.get(&key) {
            return c.clone();
        }
        let compiled = Arc::new(Compiled::new(&feed.pipeline, budgets));
        cache.retain(|(id, _), _| id != &feed.id);
        cache.insert(key, compiled.clone());
        compiled
    }

    /// Runs `records` through the stateless rules of their sources' published feeds, each
    /// tenant's records in that tenant's compute lane and the tenants side by side, so one
    /// tenant's expensive rules delay its own records only. With a `unit` (the stored batch
    /// the records came in, which always holds the same records), the outputs are stored
    /// once per unit rather than checked id by id. `feeds` keeps the sources' feeds as they
    /// were read: pass a fresh one per batch.
    #[tracing::instrument(level = "debug", skip_all, fields(records = records.len(), unit = ?unit))]
    pub async fn handle(
        &self,
        services: &Services,
        records: &[RawRecord],
        unit: Option<&str>,
        feeds: &FeedsOfSources,
    ) -> Result<Processed, CoreError> {
        let mut tenants: Vec<(&TenantId, Vec<&RawRecord>)> = Vec::new();
        for raw in records {
            match tenants.iter_mut().find(|(t, _)| *t == &raw.tenant_id) {
                Some((_, recs)) => recs.push(raw),
                None => tenants.push((&raw.tenant_id, vec![raw])),
            }
        }
        let parts = join_all(
            tenants
                .iter()
                .map(|(tenant, recs)| self.tenant_part(services, tenant, recs, feeds)),
        )
        .await;
        let mut outputs = Vec::new();
        let mut error_count = 0;
        for ((tenant, _), part) in tenants.iter().zip(parts) {
            let part = part?;
            if !part.errors.is_empty() {
                error_count += part.errors.len();
                services
                    .store
                    .record_feed_errors(tenant, &part.errors)
                    .await?;
            }
            outputs.extend(part.outputs);
        }
        let new = match unit {
            _ if outputs.is_empty() => 0,
            Some(unit) => services.store.append_output_once(unit, &outputs).await?,
            None => services.store.append_output(&outputs).await?,
        };
        if new > 0 {
            services.notifier.outputs_appended();
            let mut feeds: Vec<&FeedId> = outputs.iter().map(|o| &o.feed_id).collect();
            feeds.sort_unstable();
            feeds.dedup();
            for feed in feeds {
                services.notifier.feed_appended(feed);
            }
        }
        Ok(Processed {
            outputs: new,
            errors: error_count,
        })
    }

    /// One tenant's records through its feeds, source by source and feed by feed, each
    /// feed's rules over all of the source's records at once.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %tenant, records = records.len()))]
    async fn tenant_part(
        &self,
        services: &Services,
        tenant: &TenantId,
        records: &[&RawRecord],
        feeds: &FeedsOfSources,
    ) -> Result<Part, CoreError> {
        let now = services.clock.now();
        let lane = tenant_lane(tenant);
        let lookup = References::of(services, tenant);
        let runner = Runner {
            compute: services.compute.as_ref(),
            lane: &lane,
            lookup: &lookup,
        };
        let budgets = services.settings.limits.budgets;
        let mut sources: Vec<(&SourceId, Vec<&RawRecord>)> = Vec::new();
        for raw in records {
            match sources.iter_mut().find(|(s, _)| *s == &raw.source_id) {
                Some((_, recs)) => recs.push(raw),
                None => sources.push((&raw.source_id, vec![raw])),
            }
        }
        let mut part = Part::default();
        for (source, raws) in sources {
            for feed in feeds
                .of(services.store.as_ref(), tenant, source)
                .await?
                .iter()
            {
                let compiled = self.compiled(feed, budgets);
                if compiled.window.is_some() {
                    continue; // windows run on their schedule
                }
                let data = raws.iter().map(|r| r.data.clone()).collect();
                let outcomes = compiled.apply_all(data, &runner).await?;
                for (raw, outcome) in raws.iter().zip(outcomes) {
                    match outcome {
                        Ok(Outcome::Keep(data)) => part.outputs.push(OutputRecord {
                            id: OutputRecord::id_for(&feed.id, feed.pipeline.version, raw),
                            feed_id: feed.id.clone(),
                            tenant_id: feed.tenant_id.clone(),
                            pipeline_version: feed.pipeline.version,
                            ts: raw.ts,
                            created_at: now,
                            expires_at: raw.expires_at,
                            data,
                        }),
                        Ok(Outcome::Drop) => {}
                        Err(e) => part.errors.push(FeedError {
                            feed_id: feed.id.clone(),
                            record_id: Some(raw.id.clone()),
                            pipeline_version: feed.pipeline.version,
                            rule: e.rule,
                            message: e.message,
                            at: now,
                        }),
                    }
                }
            }
        }
        Ok(part)
    }
}

/// The published feeds of the sources a batch's records came from, each read once per batch
/// (a stream batch holds many stored batches of the same sources).
#[derive(Default)]
pub struct FeedsOfSources(Mutex<HashMap<SourceKey, Arc<Vec<Feed>>>>);

type SourceKey = (TenantId, SourceId);

impl FeedsOfSources {
    /// The published feeds of `source`, read on first use.
    pub async fn of(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        source: &SourceId,
    ) -> Result<Arc<Vec<Feed>>, CoreError> {
        let key = (tenant.clone(), source.clone());
        if let Some(feeds) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(feeds.clone());
        }
        let feeds = Arc::new(feeds_of_source(store, tenant, source).await?);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, feeds.clone());
        Ok(feeds)
    }
}

/// Published feeds of a source.
pub async fn feeds_of_source(
    store: &dyn Store,
    tenant: &TenantId,
    source: &SourceId,
) -> Result<Vec<Feed>, CoreError> {
    let mut feeds = Vec::new();
    let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
    loop {
        let p = store.list_feeds(tenant, &page).await?;
        feeds.extend(
            p.items
                .into_iter()
                .filter(|f| &f.source_id == source && f.status == FeedStatus::Published),
        );
        match p.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return Ok(feeds),
        }
    }
}

/// Published feeds, across tenants, whose pipeline has a window rule.
pub async fn feeds_of_tenant_with_windows(store: &dyn Store) -> Result<Vec<Feed>, CoreError> {
    let mut feeds = Vec::new();
    let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
    loop {
        let p = store.list_windowed_feeds(&page).await?;
        feeds.extend(p.items);
        match p.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return Ok(feeds),
        }
    }
}

/// What one tenant's rules look up: its reference rows (`enrich`) and models (`model`).
pub struct References {
    /// The services (store, models, compute).
    pub services: Services,
    /// The tenant whose tables and models are read.
    pub tenant: TenantId,
}

impl References {
    /// The lookups of `tenant`'s rules.
    pub fn of(services: &Services, tenant: &TenantId) -> References {
        References {
            services: services.clone(),
            tenant: tenant.clone(),
        }
    }
}

#[async_trait]
impl Lookup for References {
    async fn lookup(&self, table: &str, key: &str) -> Result<Option<serde_json::Value>, CoreError> {
        match self
            .services
            .store
            .get_reference(&self.tenant, table, key)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(CoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn model(&self, name: &str, version: u32) -> Result<Option<LoadedVersion>, CoreError> {
        let services = &self.services;
        let found = services
            .models
            .version(services.store.as_ref(), &self.tenant, name, version)
            .await?;
        let Some(info) = found else {
            return Ok(None);
        };
        let lane = tenant_lane(&self.tenant);
        let model = self
            .services
            .models
            .get(
                self.services.compute.as_ref(),
                &lane,
                &info.object_key(),
                &info.sha256,
            )
            .await?;
        Ok(Some((model, info)))
    }

    async fn infer(&self, endpoint: &Endpoint, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let secret =
            match &endpoint.secret_sealed {
                Some(sealed) => Some(self.services.secrets.open(sealed).map_err(|_| {
                    "its secret cannot be opened with this server's key".to_owned()
                })?),
                None => None,
            };
        ask_remote(&self.services, endpoint, secret, body).await
    }
}

/// Asks the remote model at `endpoint` (with `secret` in its header): its answer, or why
/// there is none. A failure (no answer, 429, 5xx) is tried again twice after a wait; a model
/// whose breaker is open is not asked (see [`Models::breaker_open`]); answers over
/// [`MAX_REMOTE_ANSWER_BYTES`] are refused.
///
/// [`Models::breaker_open`]: wharf_core::models::Models::breaker_open
async fn ask_remote(
    services: &Services,
    endpoint: &Endpoint,
    secret: Option<String>,
    body: Vec<u8>,
) -> Result<Vec<u8>, String> {
    use wharf_core::models::{
        BREAKER_FAILURES, BREAKER_OPEN, MAX_REMOTE_ANSWER_BYTES, REMOTE_WAITS,
    };
    let url = endpoint.url.url().as_str();
    if services.models.breaker_open(url) {
        return Err(format!(
            "it failed {BREAKER_FAILURES} requests in a row; not asked for {} s",
            BREAKER_OPEN.as_secs()
        ));
    }
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let (Some(header), Some(secret)) = (&endpoint.header, secret) {
        headers.push((header.clone(), secret));
    }
    let timeout = std::time::Duration::from_millis(u64::from(endpoint.timeout_ms));
    let mut waits = REMOTE_WAITS.iter();
    let outcome = loop {
        let answer = services
            .http
            .exchange(
                url,
                &headers,
                body.clone(),
                timeout,
                MAX_REMOTE_ANSWER_BYTES,
            )
            .await;
        let (again, outcome) = match answer {
            Ok((status, body)) if (200..300).contains(&status) => (false, Ok(body)),
            Ok((status, _)) => (
                status == 429 || status >= 500,
                Err(format!("it answered {status}")),
            ),
            Err(e) => (true, Err(e.reason())),
        };
        match (again, waits.next()) {
            (true, Some(wait)) => tokio::time::sleep(*wait).await,
            _ => break outcome,
        }
    };
    services.models.record_remote(url, outcome.is_ok());
    if let Err(reason) = &outcome {
        tracing::warn!(host = endpoint.url.url().host_str().unwrap_or(""), %reason, "a remote model failed a request");
    }
    outcome
}
