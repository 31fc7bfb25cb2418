//! Collecting invoices through the payment processor (Stripe), once a month is closed:
//! - a subscriber saves a payment method on a page of the processor's (`payment_method_page`);
//!   the completed setup's signed event makes it the customer's default;
//! - each invoice is pushed once: a customer with a payment method is charged automatically,
//!   the others are sent the invoice to pay on the processor's hosted page, whose address the
//!   invoice shows;
//! - a failed payment starts dunning: unpaid `dunning_days` later, the subscriber's
//!   subscriptions to that vendor are paused (and the subscriber told); paying resumes them;
//! - vendors are paid their payouts' net through Stripe Connect (`payouts`).
//!
//! Every call to the processor carries an idempotency key derived from Wharf's ids, and every
//! event is applied once, so retries and Stripe's redeliveries change nothing twice.

use super::Services;
use crate::domain::{
    CollectionMethod, IdempotencyState, Invoice, InvoiceChange, InvoiceFilter, InvoiceItem,
    InvoiceStatus, PaymentCustomer, PaymentEventKind, PaymentSetup, Principal, Role, RunStatus,
    StoredResponse, Subscription, SubscriptionStatus,
};
use crate::ports::Payments;
use crate::{CoreError, InvoiceId, PageRequest, UserId};
use rust_decimal::Decimal;

/// How long a sent invoice gives the subscriber to pay (Stripe's `days_until_due`).
const DUE_AFTER: time::Duration = time::Duration::days(30);

/// Idempotency scope of applied Stripe events.
const EVENT_SCOPE: &str = "stripe-event";

/// What one round of collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Invoices whose subscriptions dunning paused.
    pub overdue: usize,
    /// Payouts transferred to vendors.
    pub transferred: usize,
}

/// What a Stripe webhook call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeEventOutcome {
    /// The invoice's status changed, or the payment method was saved.
    Applied,
    /// Seen before (Stripe retries); nothing changed.
    Duplicate,
    /// Not an event Wharf acts on, or not about a Wharf invoice or setup.
    Ignored,
}

impl Services {
    pub(super) fn payments(&self) -> Result<&dyn Payments, CoreError> {
        self.payments
            .as_deref()
            .ok_or(CoreError::NotFound("payment processor"))
    }

    /// A page of the processor's where the calling subscriber saves a payment method; its
    /// invoices are charged to it from then on. Answers the page's URL (a new page each call).
    pub async fn payment_method_page(&self, who: &Principal) -> Result<String, CoreError> {
        let me = who.user_with(Role::Subscriber)?;
        let payments = self.payments()?;
        if self
            .store
            .get_subscriber(me)
            .await?
            .email_verified_at
            .is_none()
        {
            return Err(CoreError::Conflict(
                "verify your email address first (the link mailed at sign-up)".into(),
            ));
        }
        let customer = self.customer_of(payments, me).await?;
        let base = self.settings.public_url.trim_end_matches('/');
        let setup = PaymentSetup {
            customer: customer.customer,
            subscriber: me.clone(),
            currency: self.usual_currency(me).await?,
            success_url: format!("{base}/?payment_method=saved"),
            cancel_url: format!("{base}/?payment_method=cancelled"),
        };
        let key = format!("wharf-setup-{}", uuid::Uuid::now_v7());
        payments.setup_page(&key, &setup).await
    }

    /// The currency of the subscriber's first subscription's plan (what its invoices are in),
    /// lowercase; `usd` before any.
    async fn usual_currency(&self, subscriber: &UserId) -> Result<String, CoreError> {
        let first = self
            .store
            .list_subscriptions_of_subscriber(subscriber, &PageRequest::first(1))
            .await?;
        let Some(sub) = first.items.first() else {
            return Ok("usd".into());
        };
        let feed = self.store.get_feed(&sub.tenant_id, &sub.feed_id).await?;
        Ok(feed
            .plan_version(&sub.plan_id, sub.plan_version)
            .map_or("usd", |plan| plan.currency.code())
            .to_owned())
    }

    /// The subscriber's customer at the processor, made on first need.
    async fn customer_of(
        &self,
        payments: &dyn Payments,
        subscriber: &UserId,
    ) -> Result<PaymentCustomer, CoreError> {
        if let Some(customer) = self.store.payment_customer(subscriber).await? {
            return Ok(customer);
        }
        let account = self.store.get_subscriber(subscriber).await?;
        let made = payments
            .create_customer(
                &format!("wharf-customer-{subscriber}"),
                subscriber,
                &account.email,
            )
            .await?;
        self.store.put_payment_customer(subscriber, &made).await
    }

    /// Pushes the period's invoices that the payment processor does not have yet, when one is
    /// configured. A failure is logged and left for the next call (the schedule's, or a run
    /// asked again), which pushes again with the same idempotency keys.
    pub(super) async fn push_invoices(&self, period: &str) {
        let Some(payments) = self.payments.clone() else {
            return;
        };
        let filter = InvoiceFilter {
            period: Some(period.to_owned()),
            ..InvoiceFilter::default()
        };
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let invoices = match self.store.list_invoices(&filter, &page).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, period, "cannot list invoices to push");
                    return;
                }
            };
            for inv in invoices.items {
                // Pushed: finalized (it has its page), or pushed before Wharf recorded how.
                let pushed = inv.hosted_invoice_url.is_some()
                    || (inv.stripe_invoice_id.is_some() && inv.collection_method.is_none());
                if pushed || inv.total.0.is_zero() {
                    continue;
                }
                if let Err(e) = self.push_invoice(payments.as_ref(), &inv).await {
                    tracing::warn!(invoice.id = %inv.id, error = %e, "pushing an invoice failed; it is pushed again later");
                }
            }
            match invoices.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return,
            }
        }
    }

    /// One invoice to the processor: its subscriber's customer (made once), a draft invoice
    /// (its id stored at once), one item per line, finalized, then charged (a saved payment
    /// method) or sent (to a verified address). How it is collected is decided once and
    /// stored first, the keys derive from Wharf's ids, and a push that stopped carries on
    /// with the invoice Stripe has, so a retry, however late, repeats nothing.
    async fn push_invoice(&self, payments: &dyn Payments, inv: &Invoice) -> Result<(), CoreError> {
        let verified = self
            .store
            .get_subscriber(&inv.subscriber_id)
            .await?
            .email_verified_at
            .is_some();
        let customer = self.customer_of(payments, &inv.subscriber_id).await?;
        let method = match inv.collection_method {
            Some(method) => method,
            None => {
                let method = if customer.payment_method.is_some() {
                    CollectionMethod::ChargeAutomatically
                } else {
                    CollectionMethod::SendInvoice
                };
                let change = InvoiceChange {
                    collection_method: Some(method),
                    ..InvoiceChange::default()
                };
                self.store.update_invoice(&inv.id, &change).await?;
                method
            }
        };
        let key = format!("wharf-{}", inv.id);
        let (remote, state) = match &inv.stripe_invoice_id {
            // A push that stopped after Stripe made the invoice carries on with it (Stripe
            // forgets idempotency keys after a day: nothing is made twice, however late).
            Some(remote) => (remote.clone(), Some(payments.fetch_invoice(remote).await?)),
            None => {
                let remote = payments
                    .create_invoice(&format!("{key}-invoice"), &customer.customer, inv, method)
                    .await?;
                let made = InvoiceChange {
                    stripe_invoice_id: Some(remote.clone()),
                    ..InvoiceChange::default()
                };
                self.store.update_invoice(&inv.id, &made).await?;
                (remote, None)
            }
        };
        let draft = state.as_ref().is_none_or(|r| r.status == "draft");
        if draft {
            self.add_items(payments, inv, &customer.customer, &remote, state.is_some())
                .await?;
        }
        let automatic = method == CollectionMethod::ChargeAutomatically;
        let hosted_invoice_url = match state {
            Some(remote) if !draft => remote.hosted_invoice_url,
            _ => {
                payments
                    .finalize_invoice(&format!("{key}-finalize"), &remote, automatic)
                    .await?
                    .hosted_invoice_url
            }
        };
        // Stripe mails a sent invoice: not to an address nobody verified (it is still
        // open, shown in Wharf with its page, and overdue at its due date all the same).
        if !automatic && verified {
            payments
                .send_invoice(&format!("{key}-send"), &remote)
                .await?;
        }
        let change = InvoiceChange {
            stripe_invoice_id: Some(remote),
            hosted_invoice_url,
            due_at: (!automatic).then(|| self.clock.now() + DUE_AFTER),
            ..InvoiceChange::default()
        };
        self.store
            .update_invoice(&inv.id, &change)
            .await
            .map(|_| ())
    }

    /// Adds the invoice's lines to the processor's draft, each once: `resumed` (a push that
    /// stopped before) skips the lines the draft has.
    async fn add_items(
        &self,
        payments: &dyn Payments,
        inv: &Invoice,
        customer: &str,
        remote: &str,
        resumed: bool,
    ) -> Result<(), CoreError> {
        use rust_decimal::prelude::ToPrimitive;
        let added: std::collections::HashSet<usize> = if resumed {
            payments.invoice_lines(remote).await?.into_iter().collect()
        } else {
            std::collections::HashSet::new()
        };
        let scale = Decimal::from(10u64.pow(inv.currency.minor_units()));
        for (n, line) in inv.lines.iter().enumerate() {
            if line.amount.0.is_zero() || added.contains(&n) {
                continue;
            }
            let item = InvoiceItem {
                line: n,
                amount_minor: (line.amount.0 * scale)
                    .to_i64()
                    .ok_or_else(|| CoreError::internal(format!("{} is too large", line.amount)))?,
                currency: inv.currency.code().to_owned(),
                description: line.description.clone(),
            };
            payments
                .add_invoice_item(
                    &format!("wharf-{}-line-{n}", inv.id),
                    customer,
                    remote,
                    &item,
                )
                .await?;
        }
        Ok(())
    }

    /// What the schedule does for collection, after closing due months: pushes again what the
    /// last closed month could not push, pauses the subscriptions of invoices unpaid
    /// `dunning_days` after a failed payment, and transfers vendors' payouts whose invoices
    /// are paid.
    pub async fn collect_payments(&self) -> Result<Collected, CoreError> {
        if self.payments.is_none() {
            return Ok(Collected::default());
        }
        let runs = self.store.list_billing_runs().await?;
        if let Some(last) = runs.iter().rev().find(|r| r.status == RunStatus::Completed) {
            self.push_invoices(&last.period).await;
        }
        Ok(Collected {
            overdue: self.pause_overdue().await?,
            transferred: self.pay_vendors().await?,
        })
    }

    /// Pauses the subscriptions behind every invoice overdue (a failed payment, or a sent
    /// invoice past its due date) for `dunning_period` or more and still unpaid.
    async fn pause_overdue(&self) -> Result<usize, CoreError> {
        let now = self.clock.now();
        let mut started = 0;
        for status in [InvoiceStatus::Failed, InvoiceStatus::Open] {
            let filter = InvoiceFilter {
                status: Some(status),
                ..InvoiceFilter::default()
            };
            let mut page = PageRequest::first(crate::page::MAX_LIMIT);
            loop {
                let invoices = self.store.list_invoices(&filter, &page).await?;
                for inv in invoices.items {
                    let due = inv
                        .overdue_since(now)
                        .is_some_and(|at| at + self.settings.dunning_period <= now);
                    if due && inv.subscriptions_paused_at.is_none() {
                        self.pause_for(&inv).await?;
                        started += 1;
                    }
                }
                match invoices.next_cursor {
                    Some(c) => page.cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(started)
    }

    /// An invoice of `sub`'s subscriber to its vendor that dunning paused subscriptions for
    /// and that is still unpaid: while there is one, none of them resumes.
    pub(super) async fn overdue_invoice(
        &self,
        sub: &Subscription,
    ) -> Result<Option<InvoiceId>, CoreError> {
        self.overdue_invoice_to(&sub.subscriber_id, &sub.tenant_id)
            .await
    }

    /// An unpaid invoice of `subscriber` to `vendor` that dunning paused subscriptions for.
    async fn overdue_invoice_to(
        &self,
        subscriber: &UserId,
        vendor: &crate::VendorId,
    ) -> Result<Option<InvoiceId>, CoreError> {
        let filter = InvoiceFilter {
            subscriber: Some(subscriber.clone()),
            vendor: Some(vendor.clone()),
            ..InvoiceFilter::default()
        };
        let now = self.clock.now();
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let invoices = self.store.list_invoices(&filter, &page).await?;
            if let Some(inv) = invoices.items.iter().find(|inv| {
                inv.subscriptions_paused_at.is_some() && inv.overdue_since(now).is_some()
            }) {
                return Ok(Some(inv.id.clone()));
            }
            match invoices.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(None),
            }
        }
    }

    /// Whether `subscriber` may subscribe to a feed of `vendor`: room in its quota, and no
    /// overdue invoice to that vendor (a new subscription is no way around dunning).
    pub(super) async fn may_subscribe(
        &self,
        subscriber: &UserId,
        vendor: &crate::VendorId,
    ) -> Result<(), CoreError> {
        self.room_for_subscription(subscriber).await?;
        match self.overdue_invoice_to(subscriber, vendor).await? {
            Some(invoice) => Err(CoreError::Conflict(format!(
                "invoice {invoice} to this vendor is overdue: pay it first"
            ))),
            None => Ok(()),
        }
    }

    /// The subscriber's subscriptions to the invoice's vendor, not cancelled.
    async fn subscriptions_behind(&self, inv: &Invoice) -> Result<Vec<Subscription>, CoreError> {
        let mut found = Vec::new();
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let subs = self
                .store
                .list_subscriptions_of_subscriber(&inv.subscriber_id, &page)
                .await?;
            found.extend(subs.items.into_iter().filter(|s| {
                s.tenant_id == inv.vendor_id && s.status != SubscriptionStatus::Cancelled
            }));
            match subs.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(found),
            }
        }
    }

    /// Dunning's end: pauses the subscriptions behind an unpaid invoice and tells the
    /// subscriber.
    async fn pause_for(&self, inv: &Invoice) -> Result<(), CoreError> {
        let since = inv
            .overdue_since(self.clock.now())
            .map(crate::rfc3339)
            .unwrap_or_default();
        let reason = format!("invoice {} is overdue since {since}", inv.id);
        let mut paused = Vec::new();
        let mut unfinished = false;
        // Active ones only: one its subscriber paused stays paused, and cannot be resumed
        // while the invoice is overdue (`overdue_invoice`).
        for sub in self.subscriptions_behind(inv).await? {
            if sub.status == SubscriptionStatus::Active {
                match self
                    .set_dunning_pause(sub, Some((&inv.id, reason.clone())))
                    .await
                {
                    Ok(sub) => paused.push(sub.id.to_string()),
                    // Changed meanwhile (another tick, or its subscriber): the invoice is
                    // left unmarked, so the next tick pauses what is still active.
                    Err(CoreError::Conflict(_)) => unfinished = true,
                    Err(e) => return Err(e),
                }
            }
        }
        if !unfinished {
            let change = InvoiceChange {
                subscriptions_paused_at: Some(self.clock.now()),
                ..InvoiceChange::default()
            };
            self.store.update_invoice(&inv.id, &change).await?;
        }
        tracing::info!(invoice.id = %inv.id, subscriptions = paused.len(), "invoice overdue: subscriptions paused");
        if !paused.is_empty() {
            let body = format!(
                "Invoice {} ({} {}) is overdue since {since}, so these subscriptions are \
                 paused: {}.\nThey resume as soon as it is paid{}.\n",
                inv.id,
                inv.total,
                inv.currency.code().to_uppercase(),
                paused.join(", "),
                pay_here(inv),
            );
            self.mail_subscriber(
                &inv.subscriber_id,
                "Subscriptions paused: invoice unpaid",
                &body,
            )
            .await;
        }
        Ok(())
    }

    /// Applies a signed Stripe event once: an invoice paid (resuming what dunning paused for
    /// it) or a failed payment of it (dunning starts), or a saved payment method.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn stripe_event(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<StripeEventOutcome, CoreError> {
        let payments = self
            .payments
            .as_deref()
            .ok_or(CoreError::NotFound("Stripe webhook endpoint"))?;
        let event = payments.parse_event(signature, body, self.clock.now())?;
        if event.kind == PaymentEventKind::Other {
            return Ok(StripeEventOutcome::Ignored);
        }
        let id = event.id.as_str();
        match self
            .store
            .begin(EVENT_SCOPE, id, id, self.clock.now())
            .await?
        {
            IdempotencyState::Completed(_) => return Ok(StripeEventOutcome::Duplicate),
            IdempotencyState::Conflict => {
                return Err(CoreError::Conflict(format!(
                    "event {id} is being applied; Stripe will retry"
                )));
            }
            IdempotencyState::Started => {}
        }
        match self.apply_event(payments, id, event.kind).await {
            Ok(outcome) => {
                let done = StoredResponse {
                    status: 200,
                    body: Vec::new(),
                };
                self.store.complete(EVENT_SCOPE, id, &done).await?;
                Ok(outcome)
            }
            Err(e) => {
                self.store.abandon(EVENT_SCOPE, id).await?;
                match e {
                    // Not one of Wharf's invoices; anything else missing is retried.
                    CoreError::NotFound("invoice") => Ok(StripeEventOutcome::Ignored),
                    e => Err(e),
                }
            }
        }
    }

    async fn apply_event(
        &self,
        payments: &dyn Payments,
        event: &str,
        kind: PaymentEventKind,
    ) -> Result<StripeEventOutcome, CoreError> {
        match kind {
            PaymentEventKind::Invoice {
                invoice,
                status,
                processor_invoice,
                hosted_invoice_url,
            } => {
                let change = InvoiceChange {
                    status: Some(status),
                    stripe_invoice_id: processor_invoice,
                    hosted_invoice_url,
                    failed_at: (status == InvoiceStatus::Failed).then(|| self.clock.now()),
                    ..InvoiceChange::default()
                };
                let before = self.store.get_invoice(&invoice).await?;
                let after = self.store.update_invoice(&invoice, &change).await?;
                self.after_payment_event(&before, &after).await?;
                Ok(StripeEventOutcome::Applied)
            }
            PaymentEventKind::PaymentMethodSaved {
                subscriber,
                customer,
                payment_method,
            } => {
                let ours = self.store.payment_customer(&subscriber).await?;
                if ours.is_none_or(|c| c.customer != customer) {
                    tracing::warn!(user.id = %subscriber, event, "a setup event names another customer than the subscriber's; ignored");
                    return Ok(StripeEventOutcome::Ignored);
                }
                payments
                    .set_default_payment_method(
                        &format!("wharf-default-{payment_method}"),
                        &customer,
                        &payment_method,
                    )
                    .await?;
                self.store
                    .set_payment_method(&subscriber, &payment_method)
                    .await?;
                Ok(StripeEventOutcome::Applied)
            }
            PaymentEventKind::AccountUpdated {
                vendor,
                account,
                payouts_enabled,
            } => {
                self.account_updated(&vendor, &account, payouts_enabled)
                    .await
            }
            PaymentEventKind::Other => Ok(StripeEventOutcome::Ignored),
        }
    }

    /// What follows a payment event: the first failure of an invoice is mailed to the
    /// subscriber; a payment resumes what dunning paused for it.
    async fn after_payment_event(
        &self,
        before: &Invoice,
        after: &Invoice,
    ) -> Result<(), CoreError> {
        if before.payment_failed_at.is_none() && after.payment_failed_at.is_some() {
            let body = format!(
                "A payment of invoice {} ({} {}) failed. Unless it is paid within {} days, \
                 your subscriptions to this vendor are paused until it is{}.\n",
                after.id,
                after.total,
                after.currency.code().to_uppercase(),
                self.settings.dunning_period.as_secs() / 86_400,
                pay_here(after),
            );
            self.mail_subscriber(&after.subscriber_id, "Payment failed", &body)
                .await;
        }
        // Every time it is told paid (a redelivered event finishes what a failure left).
        if after.status == InvoiceStatus::Paid {
            self.resume_paid(&after.id, after).await?;
        }
        Ok(())
    }

    /// Resumes the subscriptions dunning paused for a paid invoice, unless another invoice
    /// to the vendor is overdue: they then stay paused for that one.
    async fn resume_paid(&self, id: &InvoiceId, inv: &Invoice) -> Result<(), CoreError> {
        let still = self
            .overdue_invoice_to(&inv.subscriber_id, &inv.vendor_id)
            .await?;
        let mut resumed = Vec::new();
        for sub in self.subscriptions_behind(inv).await? {
            if sub.paused_for_invoice.as_ref() != Some(id) {
                continue;
            }
            match &still {
                Some(other) => {
                    let reason = format!("invoice {other} is unpaid");
                    self.set_dunning_pause(sub, Some((other, reason))).await?;
                }
                None => resumed.push(self.set_dunning_pause(sub, None).await?.id.to_string()),
            }
        }
        if !resumed.is_empty() {
            let body = format!(
                "Invoice {id} is paid, thank you. These subscriptions are active again: {}.\n",
                resumed.join(", ")
            );
            self.mail_subscriber(&inv.subscriber_id, "Subscriptions resumed", &body)
                .await;
        }
        Ok(())
    }
}

/// Where a mail tells the subscriber to pay an invoice, when the processor has a page for it.
fn pay_here(inv: &Invoice) -> String {
    inv.hosted_invoice_url
        .as_deref()
        .map(|url| format!(" (pay it at {url})"))
        .unwrap_or_default()
}
