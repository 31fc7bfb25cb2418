//! Sources, feeds, pipelines, plans, reference data and the public catalog.

use super::Services;
use crate::domain::*;
use crate::error::Problems;
use crate::{CoreError, FeedId, Page, PageRequest, SourceId};

/// Largest reference row accepted, in bytes of JSON.
const MAX_REFERENCE_BYTES: usize = 64 * 1024;

impl Services {
    /// Registers a source in the caller's tenant.
    pub async fn create_source(
        &self,
        who: &Principal,
        input: NewSource,
    ) -> Result<Source, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let now = self.clock.now();
        let source = Source {
            id: SourceId::new(),
            tenant_id: tenant.clone(),
            name: input.name.trim().to_owned(),
            kind: input.kind,
            url: input.url,
            queue_url: None,
            every: input.every,
            schema: input.schema,
            retention_days: input.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS),
            last_polled_at: None,
            last_success_at: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        source.validate(self.settings.shape)?;
        self.check_poll_address(&source)?;
        self.room_for_source(tenant).await?;
        let mut source = source;
        if source.kind == SourceKind::Sqs {
            let queues = self.source_queues.as_ref().ok_or_else(|| {
                CoreError::invalid("kind", "`sqs` sources are not served by this server")
            })?;
            source.queue_url = Some(queues.create_queue(&source).await?);
            // A source that cannot be stored leaves no queue behind.
            if let Err(e) = self.store.create_source(&source).await {
                if let Err(cleanup) = queues.delete_queue(&source).await {
                    tracing::warn!(source.id = %source.id, error = %cleanup, "cannot remove the queue of a failed source");
                }
                return Err(e);
            }
            return Ok(source);
        }
        self.store.create_source(&source).await?;
        Ok(source)
    }

    /// Refuses a poll URL naming an address outbound connections may not reach. A host name
    /// is resolved when polled, where every address it gives is checked again.
    fn check_poll_address(&self, source: &Source) -> Result<(), CoreError> {
        let url = source.url.as_deref().and_then(|u| url::Url::parse(u).ok());
        let Some(ip) = url.as_ref().and_then(crate::net::literal_address) else {
            return Ok(());
        };
        match self.settings.egress.refuses(ip) {
            Some(why) => Err(CoreError::invalid(
                "url",
                format!("{why}; polls may not reach it"),
            )),
            None => Ok(()),
        }
    }

    /// Reads a source of the caller's tenant.
    pub async fn get_source(&self, who: &Principal, id: &SourceId) -> Result<Source, CoreError> {
        self.store
            .get_source(who.tenant_with(Role::VendorAdmin)?, id)
            .await
    }

    /// Lists the caller's tenant's sources.
    pub async fn list_sources(
        &self,
        who: &Principal,
        page: &PageRequest,
    ) -> Result<Page<Source>, CoreError> {
        self.store
            .list_sources(who.tenant_with(Role::VendorAdmin)?, page)
            .await
    }

    /// Changes a source of the caller's tenant.
    #[tracing::instrument(level = "debug", skip_all, fields(source.id = %id))]
    pub async fn update_source(
        &self,
        who: &Principal,
        id: &SourceId,
        patch: SourcePatch,
    ) -> Result<Source, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let mut source = self.store.get_source(tenant, id).await?;
        if let Some(name) = patch.name {
            source.name = name.trim().to_owned();
        }
        if patch.url.is_some() {
            source.url = patch.url;
        }
        if patch.every.is_some() {
            source.every = patch.every;
        }
        if patch.schema.is_some() {
            source.schema = patch.schema;
        }
        if let Some(days) = patch.retention_days {
            source.retention_days = days;
        }
        source.updated_at = self.clock.now();
        source.validate(self.settings.shape)?;
        self.check_poll_address(&source)?;
        self.store.update_source(&source).await?;
        Ok(source)
    }

    /// Deletes a source of the caller's tenant that no feed uses.
    #[tracing::instrument(level = "debug", skip_all, fields(source.id = %id))]
    pub async fn delete_source(&self, who: &Principal, id: &SourceId) -> Result<(), CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let source = self.store.get_source(tenant, id).await?;
        self.store.delete_source(tenant, id).await?;
        if let (SourceKind::Sqs, Some(queues)) = (source.kind, &self.source_queues)
            && let Err(e) = queues.delete_queue(&source).await
        {
            // The source is gone and nothing reads its queue; the queue is only left over.
            tracing::warn!(source.id = %source.id, error = %e, "cannot delete the source's queue");
        }
        Ok(())
    }

    /// Defines a feed in the caller's tenant.
    pub async fn create_feed(&self, who: &Principal, input: NewFeed) -> Result<Feed, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let mut p = Problems::default();
        let budgets = &self.settings.limits.budgets;
        let mut rules = input
            .pipeline
            .parse("pipeline.", budgets)
            .unwrap_or_else(|errors| {
                p.extend(errors);
                Vec::new()
            });
        self.check_model_rules(tenant, "pipeline.", &mut rules, &mut p)
            .await?;
        let now = self.clock.now();
        let feed = Feed {
            id: FeedId::new(),
            tenant_id: tenant.clone(),
            source_id: input.source_id,
            name: input.name.trim().to_owned(),
            description: input.description,
            pipeline: Pipeline { version: 1, rules },
            plans: input
                .plans
                .into_iter()
                .map(|plan| Plan {
                    version: first_plan_version(),
                    ..plan
                })
                .collect(),
            retired_plans: Vec::new(),
            ends_at: None,
            visibility: input.visibility,
            allowed_subscribers: input.allowed_subscribers,
            status: input.status,
            sample: input.sample,
            revision: 1,
            created_at: now,
            updated_at: now,
        };
        feed.validate_fields(&mut p);
        if feed.status == FeedStatus::Archived {
            p.add("status", "a new feed is draft or published");
        }
        match self.store.get_source(tenant, &feed.source_id).await {
            Ok(_) => {}
            Err(CoreError::NotFound(_)) => p.add("source_id", "no such source in your tenant"),
            Err(e) => return Err(e),
        }
        p.finish()?;
        let published = feed.status == FeedStatus::Published;
        self.room_for_feed(tenant, &feed.source_id, published)
            .await?;
        if published {
            self.require_active_vendor(tenant).await?;
            self.open_topic(&feed).await?;
        }
        if let Err(e) = self.store.create_feed(&feed).await {
            self.close_topic(&feed).await;
            return Err(e);
        }
        Ok(feed)
    }

    async fn require_active_vendor(&self, tenant: &crate::VendorId) -> Result<(), CoreError> {
        match self.store.get_vendor(tenant).await?.status {
            VendorStatus::Active => Ok(()),
            VendorStatus::Pending => Err(CoreError::Conflict(
                "the vendor is pending approval; feeds can be published once it is active".into(),
            )),
        }
    }

    /// Reads a feed of the caller's tenant.
    pub async fn get_feed(&self, who: &Principal, id: &FeedId) -> Result<Feed, CoreError> {
        self.store
            .get_feed(who.tenant_with(Role::VendorAdmin)?, id)
            .await
    }

    /// Lists the caller's tenant's feeds.
    pub async fn list_feeds(
        &self,
        who: &Principal,
        page: &PageRequest,
    ) -> Result<Page<Feed>, CoreError> {
        self.store
            .list_feeds(who.tenant_with(Role::VendorAdmin)?, page)
            .await
    }

    /// Changes a feed's name, description, plans, visibility, status or sample.
    #[tracing::instrument(level = "debug", skip_all, fields(feed.id = %id))]
    pub async fn update_feed(
        &self,
        who: &Principal,
        id: &FeedId,
        patch: FeedPatch,
    ) -> Result<Feed, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let mut feed = self.store.get_feed(tenant, id).await?;
        let was = feed.status;
        let mut p = Problems::default();
        if let Some(status) = patch.status {
            if !feed.status.can_become(status) {
                return Err(CoreError::Conflict(
                    format!("a {:?} feed cannot become {:?}", feed.status, status).to_lowercase(),
                ));
            }
            if status == FeedStatus::Published && feed.status != FeedStatus::Published {
                self.require_active_vendor(tenant).await?;
                self.room_to_publish(tenant, &feed.source_id).await?;
            }
            feed.status = status;
        }
        if let Some(plans) = patch.plans {
            let in_use = self.plans_in_use(tenant, id).await?;
            feed.replace_plans(plans, &in_use);
        }
        if let Some(name) = patch.name {
            feed.name = name.trim().to_owned();
        }
        if let Some(d) = patch.description {
            feed.description = d;
        }
        if let Some(v) = patch.visibility {
            feed.visibility = v;
        }
        if let Some(allowed) = patch.allowed_subscribers {
            feed.allowed_subscribers = allowed;
        }
        if patch.sample.is_some() {
            feed.sample = patch.sample;
        }
        let deprecated = self.deprecate(&mut feed, patch.ends_at, &mut p);
        feed.validate_fields(&mut p);
        p.finish()?;
        let publishing = feed.status == FeedStatus::Published && was != FeedStatus::Published;
        if publishing {
            self.open_topic(&feed).await?;
        }
        let saved = match self.save_feed(feed.clone()).await {
            Ok(saved) => saved,
            Err(e) => {
                if publishing {
                    self.close_topic(&feed).await;
                }
                return Err(e);
            }
        };
        if saved.status == FeedStatus::Archived {
            if was != FeedStatus::Archived {
                self.close_topic(&saved).await;
            }
            // Again on every archive request: one a failure left running ends now.
            self.end_subscriptions_of_feed(&saved, saved.updated_at)
                .await?;
        } else if deprecated {
            self.announce_end(&saved).await?;
        }
        Ok(saved)
    }

    /// Creates the topic of a feed being published (aws shape).
    async fn open_topic(&self, feed: &Feed) -> Result<(), CoreError> {
        match &self.fanout {
            Some(fanout) => fanout.open_topic(feed).await,
            None => Ok(()),
        }
    }

    /// Deletes the topic of a feed archived or deleted; a failure is logged, not returned
    /// (the feed's change is stored; nothing is published to an archived feed's topic).
    pub(super) async fn close_topic(&self, feed: &Feed) {
        if let Some(fanout) = &self.fanout
            && let Err(e) = fanout.close_topic(feed).await
        {
            tracing::warn!(feed.id = %feed.id, error = %e, "cannot delete a feed's topic");
        }
    }

    pub(super) async fn save_feed(&self, mut feed: Feed) -> Result<Feed, CoreError> {
        feed.revision += 1;
        feed.updated_at = self.clock.now();
        self.store.update_feed(&feed).await?;
        Ok(feed)
    }

    /// The plan versions of every subscription of the feed, ended ones included: a cancelled
    /// subscription is still rated for its last month and for usage counted late.
    async fn plans_in_use(
        &self,
        tenant: &crate::VendorId,
        feed: &FeedId,
    ) -> Result<Vec<(String, u32)>, CoreError> {
        let mut used = Vec::new();
        for s in self.every_subscription_of_feed(tenant, feed).await? {
            for version in s.plan_versions() {
                let plan = (s.plan_id.clone(), version);
                if !used.contains(&plan) {
                    used.push(plan);
                }
            }
        }
        Ok(used)
    }

    /// Every subscription of a feed, whatever its status, page after page.
    pub async fn every_subscription_of_feed(
        &self,
        tenant: &crate::VendorId,
        feed: &FeedId,
    ) -> Result<Vec<Subscription>, CoreError> {
        let mut all = Vec::new();
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let subs = self
                .store
                .list_subscriptions_of_feed(tenant, feed, &page)
                .await?;
            all.extend(subs.items);
            match subs.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// Saves a new pipeline version of a feed of the caller's tenant.
    #[tracing::instrument(level = "debug", skip_all, fields(feed.id = %id))]
    pub async fn put_pipeline(
        &self,
        who: &Principal,
        id: &FeedId,
        spec: PipelineSpec,
    ) -> Result<Feed, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let mut rules = spec
            .parse("", &self.settings.limits.budgets)
            .map_err(CoreError::Validation)?;
        let mut p = Problems::default();
        self.check_model_rules(tenant, "", &mut rules, &mut p)
            .await?;
        p.finish()?;
        let mut feed = self.store.get_feed(tenant, id).await?;
        if feed.status == FeedStatus::Archived {
            return Err(CoreError::Conflict("an archived feed cannot change".into()));
        }
        feed.pipeline = Pipeline {
            version: feed.pipeline.version + 1,
            rules,
        };
        self.save_feed(feed).await
    }

    /// Deletes a feed of the caller's tenant that has no subscriptions.
    #[tracing::instrument(level = "debug", skip_all, fields(feed.id = %id))]
    pub async fn delete_feed(&self, who: &Principal, id: &FeedId) -> Result<(), CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let feed = self.store.get_feed(tenant, id).await?;
        self.store.delete_feed(tenant, id).await?;
        if feed.status == FeedStatus::Published {
            self.close_topic(&feed).await;
        }
        Ok(())
    }

    /// Lists who subscribes to a feed of the caller's tenant.
    pub async fn feed_subscriptions(
        &self,
        who: &Principal,
        id: &FeedId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        self.store.get_feed(tenant, id).await?;
        self.store
            .list_subscriptions_of_feed(tenant, id, page)
            .await
    }

    /// Stores a reference row; returns whether it was new.
    pub async fn put_reference(
        &self,
        who: &Principal,
        table: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<bool, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        check_reference_path(table, key)?;
        if !value.is_object() {
            return Err(CoreError::invalid(
                "body",
                "a reference row is a JSON object",
            ));
        }
        if serde_json::to_vec(&value)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
            > MAX_REFERENCE_BYTES
        {
            return Err(CoreError::invalid(
                "body",
                format!("a reference row is at most {MAX_REFERENCE_BYTES} bytes"),
            ));
        }
        self.store.put_reference(tenant, table, key, &value).await
    }

    /// Reads a reference row.
    pub async fn get_reference(
        &self,
        who: &Principal,
        table: &str,
        key: &str,
    ) -> Result<serde_json::Value, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        check_reference_path(table, key).map_err(|_| CoreError::NotFound("reference row"))?;
        self.store.get_reference(tenant, table, key).await
    }

    /// Browses the public catalog.
    pub async fn catalog(
        &self,
        query: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<CatalogEntry>, CoreError> {
        let query = query.map(str::trim).filter(|q| !q.is_empty());
        if query.is_some_and(|q| q.chars().count() > 100) {
            return Err(CoreError::invalid("q", "must be at most 100 characters"));
        }
        self.store.list_catalog(query, page).await
    }

    /// One catalog entry: a published public feed of an active vendor.
    pub async fn catalog_entry(&self, id: &FeedId) -> Result<CatalogEntry, CoreError> {
        let feed = self.store.locate_feed(id).await?;
        if feed.status != FeedStatus::Published || feed.visibility != Visibility::Public {
            return Err(CoreError::NotFound("feed"));
        }
        let vendor = self.store.get_vendor(&feed.tenant_id).await?;
        if vendor.status != VendorStatus::Active {
            return Err(CoreError::NotFound("feed"));
        }
        let source = self
            .store
            .get_source(&feed.tenant_id, &feed.source_id)
            .await?;
        Ok(CatalogEntry::of(feed, vendor, source.schema))
    }
}

fn check_reference_path(table: &str, key: &str) -> Result<(), CoreError> {
    let mut p = Problems::default();
    if !is_slug(table) {
        p.add("table", "must match [a-z0-9_-]{1,64}");
    }
    if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        p.add(
            "key",
            "must be 1 to 256 characters without control characters",
        );
    }
    p.finish()
}
