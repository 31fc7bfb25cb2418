//! Subscriptions: create, read, pause and resume, change, cancel, rotate the signing secret.

use super::Services;
use crate::credentials;
use crate::domain::*;
use crate::error::Problems;
use crate::expr::Expr;
use crate::{CoreError, Page, PageRequest, SubscriptionId, Timestamp};

/// What a sealed email confirmation says it is.
const EMAIL_CONFIRMATION: &str = "email-confirmation";

/// How long a confirmation link works.
const EMAIL_CONFIRMATION_VALID: time::Duration = time::Duration::days(7);

impl Services {
    /// Subscribes the caller to a published feed.
    #[tracing::instrument(level = "debug", skip_all, fields(feed.id = %input.feed_id))]
    pub async fn create_subscription(
        &self,
        who: &Principal,
        input: NewSubscription,
    ) -> Result<SubscriptionWithSecret, CoreError> {
        let subscriber = who.user_with(Role::Subscriber)?.clone();
        let mut p = Problems::default();
        let feed = match self.store.locate_feed(&input.feed_id).await {
            Ok(f) if f.status == FeedStatus::Published && self.admits(&f, &subscriber).await? => {
                Some(f)
            }
            Ok(_) | Err(CoreError::NotFound(_)) => {
                p.add("feed_id", "no published feed with this id");
                None
            }
            Err(e) => return Err(e),
        };
        let on_sale = feed.as_ref().map(|f| f.on_sale(&input.plan_id, &mut p));
        let filter = self
            .check_delivery_settings(
                &mut p,
                &input.channel,
                input.filter.as_deref(),
                input.batch.as_ref(),
            )
            .await;
        self.check_backfill(input.backfill.as_ref(), &input.channel, &mut p);
        p.finish()?;
        let Some(feed) = feed else {
            return Err(CoreError::NotFound("feed"));
        };
        self.may_subscribe(&subscriber, &feed.tenant_id).await?;
        if self.store.get_vendor(&feed.tenant_id).await?.status != VendorStatus::Active {
            return Err(CoreError::invalid(
                "feed_id",
                "no published feed with this id",
            ));
        }
        let now = self.clock.now();
        let mut sub = Subscription {
            id: SubscriptionId::new(),
            tenant_id: feed.tenant_id.clone(),
            subscriber_id: subscriber,
            feed_id: feed.id.clone(),
            plan_id: input.plan_id,
            plan_version: on_sale.flatten().unwrap_or_else(first_plan_version),
            plan_moves: vec![],
            channel: input.channel,
            filter,
            batch: input.batch,
            status: SubscriptionStatus::Active,
            disabled_reason: None,
            paused_for_invoice: None,
            failing_since: None,
            recent_replays: vec![],
            email_confirmed_at: None,
            native: None,
            backfill: None,
            history: vec![StatusChange {
                status: SubscriptionStatus::Active,
                at: now,
            }],
            revision: 1,
            created_at: now,
            updated_at: now,
        };
        sub.backfill = self.grant_backfill(&sub, input.backfill.as_ref()).await?;
        let (secret, sealed) = self.new_secret_for(&sub.channel, now)?;
        // Mailed before anything is stored: a mail server that refuses leaves nothing behind.
        self.ask_for_confirmation(&sub, &feed).await?;
        sub.native = self.link(&sub).await?;
        if let Err(e) = self.store.create_subscription(&sub, &sealed).await {
            // A subscription that cannot be stored leaves no topic subscription behind.
            self.unlink(sub.native.as_ref()).await;
            return Err(e);
        }
        tracing::info!(tenant.id = %sub.tenant_id, feed.id = %sub.feed_id, subscription.id = %sub.id, "subscribed");
        Ok(SubscriptionWithSecret {
            subscription: sub,
            signing_secret: secret,
            withheld: Vec::new(),
        })
    }

    /// Mails the link that confirms `sub`'s email address, when Wharf mails it and it is not
    /// confirmed yet.
    async fn ask_for_confirmation(&self, sub: &Subscription, feed: &Feed) -> Result<(), CoreError> {
        let Channel::Email { address } = &sub.channel else {
            return Ok(());
        };
        if !self.awaits_confirmation(sub) {
            return Ok(());
        }
        let expires = self.clock.now() + EMAIL_CONFIRMATION_VALID;
        let token = self.seal_token(&[
            EMAIL_CONFIRMATION,
            sub.id.as_str(),
            address.as_str(),
            &expires.unix_timestamp().to_string(),
        ])?;
        let link = format!(
            "{}/v1/email-confirmations/{token}",
            self.settings.public_url
        );
        let body = format!(
            "Someone asked for the records of the feed \"{}\" to be mailed to {}.\n\n\
             To receive them, open this link within 7 days:\n\n{link}\n\n\
             If it was not you, ignore this message: nothing is sent to this address until \
             the link is opened.\n",
            feed.name,
            address.as_str()
        );
        self.mailer
            .send(
                address,
                &format!("Confirm your address for {}", feed.name),
                &body,
            )
            .await
    }

    /// Confirms an email channel's address through the link mailed to it. A link that is
    /// not one, is for another address than the subscription's current one, or belongs to a
    /// cancelled subscription is a 404; an expired one a 410.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn confirm_email(&self, token: &str) -> Result<ConfirmedEmail, CoreError> {
        let not_found = || CoreError::NotFound("confirmation");
        let parts = self.open_token(token, EMAIL_CONFIRMATION, "confirmation")?;
        let [id, address, expires] = parts.as_slice() else {
            return Err(not_found());
        };
        let id = SubscriptionId::parse(id).map_err(|_| not_found())?;
        let expires = expires.parse::<i64>().map_err(|_| not_found())?;
        let mut sub = self.store.locate_subscription(&id).await?;
        let current = match &sub.channel {
            Channel::Email { address: current } if current.as_str() == address => current.clone(),
            _ => return Err(not_found()),
        };
        if sub.status == SubscriptionStatus::Cancelled {
            return Err(not_found());
        }
        if let Some(confirmed_at) = sub.email_confirmed_at {
            return Ok(ConfirmedEmail {
                subscription_id: sub.id,
                address: current,
                confirmed_at,
            });
        }
        let now = self.clock.now();
        if now.unix_timestamp() > expires {
            return Err(CoreError::Gone(
                "this link has expired; send the subscription's email channel again for a new one"
                    .into(),
            ));
        }
        sub.email_confirmed_at = Some(now);
        sub.revision += 1;
        sub.updated_at = now;
        self.store.update_subscription(&sub, None).await?;
        // Records from before the confirmation were never the address's to receive, unless
        // the subscription asked for history: then it starts with its backfill.
        if sub.backfill.is_none() {
            self.store.skip_to_head(&sub.tenant_id, &sub.id).await?;
        }
        self.notifier.outputs_appended();
        tracing::info!(subscription.id = %sub.id, "email address confirmed");
        Ok(ConfirmedEmail {
            subscription_id: sub.id,
            address: current,
            confirmed_at: now,
        })
    }

    /// Whether `subscriber` may subscribe to `feed`: any feed that is public, a private one
    /// only when its allow-list names them or their email's domain.
    async fn admits(&self, feed: &Feed, subscriber: &crate::UserId) -> Result<bool, CoreError> {
        if feed.visibility == Visibility::Public {
            return Ok(true);
        }
        match self.store.get_subscriber(subscriber).await {
            Ok(account) => Ok(feed.admits(subscriber, &account.email)),
            Err(CoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn new_secret_for(
        &self,
        channel: &Channel,
        now: Timestamp,
    ) -> Result<(Option<String>, Vec<SigningSecret>), CoreError> {
        if !matches!(channel, Channel::Webhook { .. }) {
            return Ok((None, vec![]));
        }
        let secret = credentials::new_signing_secret()?;
        let sealed = SigningSecret {
            sealed: self.secrets.seal(&secret)?,
            created_at: now,
            expires_at: None,
        };
        Ok((Some(secret), vec![sealed]))
    }

    /// Checks a channel, filter and batching, recording what is wrong in `p`; answers the
    /// filter parsed (`None` when there is none, a blank one, or it does not parse).
    async fn check_delivery_settings(
        &self,
        p: &mut Problems,
        channel: &Channel,
        filter: Option<&str>,
        batch: Option<&Batch>,
    ) -> Option<Expr> {
        channel.validate(self.settings.shape, p);
        if let Channel::Webhook { url } = channel
            && let Err(e) = self.check_webhook_host(url.url()).await
        {
            p.add("channel.url", e);
        }
        if let Some(b) = batch {
            b.validate(p);
        }
        let filter = filter.filter(|f| !f.trim().is_empty())?;
        let budget = self.settings.limits.budgets.subscription_filter;
        Expr::parse_within(filter, budget)
            .map_err(|e| p.add("filter", e))
            .ok()
    }

    /// Refuses hosts that resolve to addresses outbound connections may not reach: non-public
    /// ones unless the operator allows them, and any outside the egress allow-list.
    pub async fn check_webhook_host(&self, url: &url::Url) -> Result<(), String> {
        let egress = &self.settings.egress;
        let refused = |addrs: &[std::net::IpAddr]| match egress.refuses_all(addrs) {
            Some(why) => Err(format!("{why}; webhooks may not reach it")),
            None => Ok(()),
        };
        if let Some(ip) = crate::net::literal_address(url) {
            return refused(&[ip]);
        }
        let Some(url::Host::Domain(host)) = url.host() else {
            return Err("must name a host".into());
        };
        let host = host.to_owned();
        if egress.allow_private && egress.only.is_none() {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = self
            .resolver
            .resolve(&host, port)
            .await
            .map_err(|e| format!("host `{host}` does not resolve: {}", e.reason()))?;
        refused(&addrs)
    }

    /// Reads a subscription: its subscriber, or an admin of the selling vendor.
    pub async fn get_subscription(
        &self,
        who: &Principal,
        id: &SubscriptionId,
    ) -> Result<Subscription, CoreError> {
        match who {
            Principal::User {
                roles,
                tenant: Some(t),
                ..
            } if roles.contains(&Role::VendorAdmin) => {
                let sub = self.store.get_subscription(t, id).await?;
                self.confirmed(sub).await
            }
            _ => {
                let sub = self.own_subscription(who, id).await?;
                self.confirmed(sub).await
            }
        }
    }

    /// Reads a subscription as the caller may see it: whole to its subscriber, without the
    /// subscriber's addresses to the selling vendor.
    pub async fn read_subscription(
        &self,
        who: &Principal,
        id: &SubscriptionId,
    ) -> Result<SubscriptionView, CoreError> {
        let sub = self.get_subscription(who, id).await?;
        Ok(if who.user_id() == Some(&sub.subscriber_id) {
            SubscriptionView::Subscriber(sub)
        } else {
            SubscriptionView::Vendor(VendorSubscription::from(&sub))
        })
    }

    /// Who carries `channel`'s records in this shape: the one place that decides it.
    pub fn route(&self, channel: &Channel) -> Route {
        match channel {
            Channel::Webhook { .. } => Route::Sender,
            Channel::Email { .. } if self.fanout.is_none() => Route::Sender,
            Channel::Email { .. } | Channel::Sqs { .. } | Channel::MobilePush { .. } => {
                Route::Topic
            }
            Channel::Websocket {} => Route::Socket,
            Channel::Pull {} => Route::Pull,
        }
    }

    /// Whether `channel` is delivered by the feed's topic rather than by Wharf.
    pub fn is_native(&self, channel: &Channel) -> bool {
        self.route(channel) == Route::Topic
    }

    /// Whether Wharf's sender delivers `sub` now: an active subscription on a channel it sends.
    pub fn is_sent_by_wharf(&self, sub: &Subscription) -> bool {
        sub.status == SubscriptionStatus::Active
            && self.route(&sub.channel) == Route::Sender
            && !self.awaits_confirmation(sub)
    }

    /// Whether `sub` mails an address, through Wharf's own mailer, that its owner has not
    /// confirmed yet.
    pub fn awaits_confirmation(&self, sub: &Subscription) -> bool {
        matches!(sub.channel, Channel::Email { .. })
            && self.route(&sub.channel) == Route::Sender
            && sub.email_confirmed_at.is_none()
    }

    /// The topic subscription `sub` should have: one for an active native channel.
    async fn link(&self, sub: &Subscription) -> Result<Option<NativeLink>, CoreError> {
        match &self.fanout {
            Some(fanout)
                if self.is_native(&sub.channel) && sub.status == SubscriptionStatus::Active =>
            {
                Ok(Some(fanout.subscribe(sub).await?))
            }
            _ => Ok(None),
        }
    }

    /// Removes a topic subscription; a failure is logged (the topic forgets it when the feed
    /// is archived).
    async fn unlink(&self, link: Option<&NativeLink>) {
        if let (Some(fanout), Some(link)) = (&self.fanout, link)
            && let Err(e) = fanout.unsubscribe(link).await
        {
            tracing::warn!(link = link.id, error = %e, "cannot remove a topic subscription");
        }
    }

    /// `sub` with its topic subscription's confirmation as the topic sees it now, stored when
    /// it changed (an email recipient confirmed).
    pub async fn confirmed(&self, mut sub: Subscription) -> Result<Subscription, CoreError> {
        let (Some(fanout), Some(link)) = (&self.fanout, &sub.native) else {
            return Ok(sub);
        };
        if !link.pending_confirmation || sub.status != SubscriptionStatus::Active {
            return Ok(sub);
        }
        let now = fanout.refresh(link).await?;
        if &now != link {
            sub.native = Some(now);
            sub.revision += 1;
            sub.updated_at = self.clock.now();
            self.store.update_subscription(&sub, None).await?;
        }
        Ok(sub)
    }

    pub(crate) async fn own_subscription(
        &self,
        who: &Principal,
        id: &SubscriptionId,
    ) -> Result<Subscription, CoreError> {
        let me = who.user_with(Role::Subscriber)?;
        match self.store.locate_subscription(id).await? {
            sub if &sub.subscriber_id == me => Ok(sub),
            _ => Err(CoreError::NotFound("subscription")),
        }
    }

    /// Lists the caller's subscriptions.
    pub async fn list_subscriptions(
        &self,
        who: &Principal,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, CoreError> {
        let me = who.user_with(Role::Subscriber)?;
        self.store.list_subscriptions_of_subscriber(me, page).await
    }

    /// Pauses, resumes or changes the channel, filter or batching of the caller's subscription.
    #[tracing::instrument(level = "debug", skip_all, fields(subscription.id = %id))]
    pub async fn update_subscription(
        &self,
        who: &Principal,
        id: &SubscriptionId,
        patch: SubscriptionPatch,
    ) -> Result<SubscriptionWithSecret, CoreError> {
        let mut sub = self.own_subscription(who, id).await?;
        if sub.status == SubscriptionStatus::Cancelled {
            return Err(CoreError::Conflict("the subscription is cancelled".into()));
        }
        let resumed = patch.status == Some(SubscriptionStatus::Active)
            && sub.status == SubscriptionStatus::Paused;
        if resumed && let Some(invoice) = self.overdue_invoice(&sub).await? {
            return Err(CoreError::Conflict(format!(
                "the subscription stays paused until invoice {invoice} is paid"
            )));
        }
        let mut p = Problems::default();
        if patch.status == Some(SubscriptionStatus::Cancelled) {
            p.add("status", "cancel with DELETE /v1/subscriptions/{id}");
        }
        let channel = patch.channel.as_ref().unwrap_or(&sub.channel);
        let filter = patch
            .filter
            .as_deref()
            .or(sub.filter.as_ref().map(Expr::source));
        let batch = patch.batch.as_ref().or(sub.batch.as_ref());
        let filter = self
            .check_delivery_settings(&mut p, channel, filter, batch)
            .await;
        p.finish()?;
        let now = self.clock.now();
        if resumed {
            sub.disabled_reason = None;
            sub.paused_for_invoice = None;
            sub.failing_since = None;
        }
        if let Some(status) = patch.status.filter(|s| *s != sub.status) {
            sub.status = status;
            sub.history.push(StatusChange { status, at: now });
        }
        let confirm = matches!(patch.channel, Some(Channel::Email { .. }));
        let new_secret = match patch.channel {
            Some(channel) => self.change_channel(&mut sub, channel, now)?,
            None => (None, None),
        };
        if patch.filter.is_some() {
            sub.filter = filter;
        }
        if patch.batch.is_some() {
            sub.batch = patch.batch;
        }
        sub.revision += 1;
        sub.updated_at = now;
        // Sending an unconfirmed address again mails a fresh link.
        if confirm {
            let feed = self.store.get_feed(&sub.tenant_id, &sub.feed_id).await?;
            self.ask_for_confirmation(&sub, &feed).await?;
        }
        self.store_relinked(&mut sub, new_secret.1.as_deref(), resumed)
            .await?;
        Ok(SubscriptionWithSecret {
            subscription: sub,
            signing_secret: new_secret.0,
            withheld: Vec::new(),
        })
    }

    /// Stores a changed `sub` (with `secrets` when they changed). The topic subscription
    /// follows the status, channel and filter: a new one is made first, the old one removed
    /// once the change is stored. A `resumed` subscription skips what was produced while it
    /// was paused: neither replay nor an earlier cursor reaches it.
    async fn store_relinked(
        &self,
        sub: &mut Subscription,
        secrets: Option<&[SigningSecret]>,
        resumed: bool,
    ) -> Result<(), CoreError> {
        if resumed {
            self.end_undelivered_backfill(sub).await?;
        }
        let old_link = sub.native.take();
        sub.native = self.link(sub).await?;
        let same = |a: Option<&NativeLink>, b: Option<&NativeLink>| {
            a.zip(b).is_some_and(|(a, b)| a.id == b.id)
        };
        if let Err(e) = self.store.update_subscription(sub, secrets).await {
            if !same(sub.native.as_ref(), old_link.as_ref()) {
                self.unlink(sub.native.as_ref()).await;
            }
            return Err(e);
        }
        if !same(sub.native.as_ref(), old_link.as_ref()) {
            self.unlink(old_link.as_ref()).await;
        }
        if resumed {
            self.store.skip_to_head(&sub.tenant_id, &sub.id).await?;
        }
        self.notifier.outputs_appended();
        Ok(())
    }

    /// Pauses `sub` for an unpaid invoice, or resumes it (`invoice` is `None`): what dunning
    /// does on the subscriber's behalf.
    pub(super) async fn set_dunning_pause(
        &self,
        mut sub: Subscription,
        invoice: Option<(&crate::InvoiceId, String)>,
    ) -> Result<Subscription, CoreError> {
        let now = self.clock.now();
        let status = match invoice {
            Some((id, reason)) => {
                sub.paused_for_invoice = Some(id.clone());
                sub.disabled_reason = Some(reason);
                SubscriptionStatus::Paused
            }
            None => {
                sub.paused_for_invoice = None;
                sub.disabled_reason = None;
                sub.failing_since = None;
                SubscriptionStatus::Active
            }
        };
        let resumed =
            status == SubscriptionStatus::Active && sub.status == SubscriptionStatus::Paused;
        if status != sub.status {
            sub.status = status;
            sub.history.push(StatusChange { status, at: now });
        }
        sub.revision += 1;
        sub.updated_at = now;
        self.store_relinked(&mut sub, None, resumed).await?;
        Ok(sub)
    }

    /// Moves `sub` to `channel`: a webhook it was not on gets a new signing secret (answered
    /// and sealed), a changed address must be confirmed again.
    fn change_channel(
        &self,
        sub: &mut Subscription,
        channel: Channel,
        now: Timestamp,
    ) -> Result<(Option<String>, Option<Vec<SigningSecret>>), CoreError> {
        let mut new_secret = (None, None);
        let was_webhook = matches!(sub.channel, Channel::Webhook { .. });
        if matches!(channel, Channel::Webhook { .. }) && !was_webhook {
            let (secret, sealed) = self.new_secret_for(&channel, now)?;
            new_secret = (secret, Some(sealed));
        }
        if channel != sub.channel {
            sub.email_confirmed_at = None;
        }
        sub.channel = channel;
        Ok(new_secret)
    }

    /// Cancels the caller's subscription for good.
    #[tracing::instrument(level = "debug", skip_all, fields(subscription.id = %id))]
    pub async fn cancel_subscription(
        &self,
        who: &Principal,
        id: &SubscriptionId,
    ) -> Result<Subscription, CoreError> {
        let sub = self.own_subscription(who, id).await?;
        if sub.status == SubscriptionStatus::Cancelled {
            return Ok(sub);
        }
        self.end_subscription(sub, self.clock.now()).await
    }

    /// Cancels `sub` as of `at`: its fee is prorated to then and nothing more is delivered.
    async fn end_subscription(
        &self,
        mut sub: Subscription,
        at: Timestamp,
    ) -> Result<Subscription, CoreError> {
        sub.status = SubscriptionStatus::Cancelled;
        sub.history.push(StatusChange {
            status: SubscriptionStatus::Cancelled,
            at,
        });
        sub.revision += 1;
        sub.updated_at = at;
        let link = sub.native.take();
        self.store.update_subscription(&sub, None).await?;
        self.unlink(link.as_ref()).await;
        Ok(sub)
    }

    /// Mails a notice to the subscriber `to` at its account's address once it is verified; a
    /// failure is logged, not returned (what the notice tells has happened all the same).
    pub(super) async fn mail_subscriber(&self, to: &crate::UserId, subject: &str, body: &str) {
        let mailed = match self.store.get_subscriber(to).await {
            Ok(subscriber) if subscriber.email_verified_at.is_none() => {
                tracing::info!(user.id = %to, subject, "a notice is not mailed to an unverified address");
                return;
            }
            Ok(subscriber) => self.mailer.send(&subscriber.email, subject, body).await,
            Err(e) => Err(e),
        };
        if let Err(e) = mailed {
            tracing::warn!(user.id = %to, error = %e, subject, "cannot mail a notice to a subscriber");
        }
    }

    /// Ends every subscription of an archived feed at `at` and tells each subscriber by email
    /// (a mail that cannot be sent is logged: the subscription has ended all the same).
    /// Archiving the feed again ends any a failure left running.
    pub(crate) async fn end_subscriptions_of_feed(
        &self,
        feed: &Feed,
        at: Timestamp,
    ) -> Result<usize, CoreError> {
        let mut ended = 0;
        for sub in self
            .every_subscription_of_feed(&feed.tenant_id, &feed.id)
            .await?
        {
            if sub.status == SubscriptionStatus::Cancelled {
                continue;
            }
            let sub = self.end_subscription(sub, at).await?;
            ended += 1;
            let body = format!(
                "The vendor has archived the feed \"{}\", so your subscription {} ended at \
                 {}. Nothing more is delivered, and this month's fee is charged only up to \
                 then.\n",
                feed.name,
                sub.id,
                crate::rfc3339(at)
            );
            let subject = format!("{} has ended", feed.name);
            self.mail_subscriber(&sub.subscriber_id, &subject, &body)
                .await;
        }
        Ok(ended)
    }

    /// Issues a new signing secret; the previous one keeps signing for the overlap period.
    #[tracing::instrument(level = "debug", skip_all, fields(subscription.id = %id))]
    pub async fn rotate_secret(
        &self,
        who: &Principal,
        id: &SubscriptionId,
    ) -> Result<RotatedSecret, CoreError> {
        let mut sub = self.own_subscription(who, id).await?;
        if sub.status == SubscriptionStatus::Cancelled {
            return Err(CoreError::Conflict("the subscription is cancelled".into()));
        }
        if !matches!(sub.channel, Channel::Webhook { .. }) {
            return Err(CoreError::Conflict(
                "only webhook subscriptions have a signing secret".into(),
            ));
        }
        let now = self.clock.now();
        let overlap_end = now + self.settings.secret_overlap;
        let mut secrets = self
            .store
            .get_signing_secrets(&sub.tenant_id, &sub.id)
            .await?;
        secrets.retain(|s| s.expires_at.is_none_or(|t| t > now));
        for s in secrets.iter_mut().filter(|s| s.expires_at.is_none()) {
            s.expires_at = Some(overlap_end);
        }
        let secret = credentials::new_signing_secret()?;
        secrets.insert(
            0,
            SigningSecret {
                sealed: self.secrets.seal(&secret)?,
                created_at: now,
                expires_at: None,
            },
        );
        sub.revision += 1;
        sub.updated_at = now;
        self.store.update_subscription(&sub, Some(&secrets)).await?;
        Ok(RotatedSecret {
            signing_secret: secret,
            previous_secret_expires_at: overlap_end,
        })
    }
}
