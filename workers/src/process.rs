//! Stateless processing: each new raw record runs through the stateless rules of every
//! published feed of its source. Output ids derive from (feed, pipeline version, raw record),
//! so processing a record twice writes the same output, never a second one. A record a rule
//! fails on goes to the feed's error list; the rest of the batch carries on.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use wharf_core::domain::{Feed, FeedError, FeedStatus, OutputRecord, RawRecord};
use wharf_core::pipeline::{Compiled, Lookup, Outcome};
use wharf_core::ports::Store;
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

impl Processor {
    fn compiled(&self, feed: &Feed) -> Arc<Compiled> {
        let key = (feed.id.clone(), feed.pipeline.version);
        let mut cache = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cache.get(&key) {
            return c.clone();
        }
        let compiled = Arc::new(Compiled::new(&feed.pipeline));
        cache.retain(|(id, _), _| id != &feed.id);
        cache.insert(key, compiled.clone());
        compiled
    }

    /// Runs `records` through the stateless rules of their sources' published feeds. With a
    /// `unit` (the stored batch the records came in, which always holds the same records),
    /// the outputs are stored once per unit rather than checked id by id.
    /// `feeds` keeps the sources' feeds as they were read: pass a fresh one per batch.
    #[tracing::instrument(level = "debug", skip_all, fields(records = records.len(), unit = ?unit))]
    pub async fn handle(
        &self,
        services: &Services,
        records: &[RawRecord],
        unit: Option<&str>,
        feeds: &mut FeedsOfSources,
    ) -> Result<Processed, CoreError> {
        let now = services.clock.now();
        let feeds_of = &mut feeds.0;
        let mut outputs = Vec::new();
        let mut errors: HashMap<TenantId, Vec<FeedError>> = HashMap::new();
        for raw in records {
            let key = (raw.tenant_id.clone(), raw.source_id.clone());
            if !feeds_of.contains_key(&key) {
                let feeds =
                    feeds_of_source(services.store.as_ref(), &raw.tenant_id, &raw.source_id)
                        .await?;
                feeds_of.insert(key.clone(), feeds);
            }
            let lookup = References {
                store: services.store.clone(),
                tenant: raw.tenant_id.clone(),
            };
            for feed in feeds_of.get(&key).into_iter().flatten() {
                let compiled = self.compiled(feed);
                if compiled.window.is_some() {
                    continue; // windows run on their schedule
                }
                match compiled.apply(raw.data.clone(), &lookup).await {
                    Ok(Outcome::Keep(data)) => outputs.push(OutputRecord {
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
                    Err(e) => errors
                        .entry(raw.tenant_id.clone())
                        .or_default()
                        .push(FeedError {
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
        let error_count = errors.values().map(Vec::len).sum();
        for (tenant, errs) in errors {
            services.store.record_feed_errors(&tenant, &errs).await?;
        }
        let new = match unit {
            _ if outputs.is_empty() => 0,
            Some(unit) => services.store.append_output_once(unit, &outputs).await?,
            None => services.store.append_output(&outputs).await?,
        };
        if new > 0 {
            services.notifier.outputs_appended();
        }
        Ok(Processed {
            outputs: new,
            errors: error_count,
        })
    }
}

/// The published feeds of the sources a batch's records came from, each read once per batch
/// (a stream batch holds many stored batches of the same sources).
#[derive(Default)]
pub struct FeedsOfSources(HashMap<(TenantId, SourceId), Vec<Feed>>);

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

/// Reference rows of one tenant, for `enrich`.
pub struct References {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The tenant whose tables are read.
    pub tenant: TenantId,
}

#[async_trait]
impl Lookup for References {
    async fn lookup(&self, table: &str, key: &str) -> Result<Option<serde_json::Value>, CoreError> {
        match self.store.get_reference(&self.tenant, table, key).await {
            Ok(v) => Ok(Some(v)),
            Err(CoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
