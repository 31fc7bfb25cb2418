//! Billing runs, invoices and payouts: who may see what, and how a month is closed.
//!
//! A run of month P, once P has ended:
//! 1. every subscription that existed during P gets a fee line (the plan's fee prorated by the
//!    share of P it was active) and a usage line (its acknowledged deliveries of P, rated);
//! 2. deliveries of the last three closed months counted after their run (acknowledgements
//!    in flight while a month closed) get an adjustment line priced at the tiers they fall
//!    in; what is billed per month is read back from stored invoices, so nothing is billed
//!    twice;
//! 3. lines are grouped per (subscriber, vendor, currency) into invoices with derived ids,
//!    stored only if absent; then payouts per (vendor, currency) from the stored invoices.
//!
//! Every step is idempotent, so a run interrupted by a crash is finished by running it again,
//! and a completed run asked again creates nothing. Months close in order, so late usage of
//! a month can only be billed after that month's own run.

use super::Services;
use crate::billing::{self, Period};
use crate::domain::InvoiceFilter;
use crate::domain::{
    BillingRun, Counted, Feed, Invoice, InvoiceLine, InvoiceStatus, LineKind, Payout, PayoutStatus,
    Plan, Principal, Role, RunProblem, RunStatus, Subscription,
};
use crate::money::{Amount, Currency};
use crate::{
    CoreError, FeedId, InvoiceId, Page, PageRequest, PayoutId, SubscriptionId, UserId, VendorId,
};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};

/// Closed months compared with their counters again by each run, for late usage.
const LATE_USAGE_MONTHS: usize = 3;
/// Invoices stored per write: a run of 10,000 subscriptions is 20 writes, not 10,000.
const INVOICES_PER_WRITE: usize = 500;

/// Who may see which invoices.
pub(super) enum Scope {
    All,
    Vendor(VendorId),
    Subscriber(UserId),
}

pub(super) fn scope(who: &Principal) -> Result<Scope, CoreError> {
    if who.has_role(Role::PlatformFinance) || who.has_role(Role::PlatformAdmin) {
        return Ok(Scope::All);
    }
    if let Ok(t) = who.tenant_with(Role::VendorFinance) {
        return Ok(Scope::Vendor(t.clone()));
    }
    if let Ok(u) = who.user_with(Role::Subscriber) {
        return Ok(Scope::Subscriber(u.clone()));
    }
    Err(CoreError::Forbidden(
        "invoices are for finance roles and the subscriber billed".into(),
    ))
}

fn amount(d: Decimal) -> Amount {
    Amount(d.normalize().max(Decimal::ZERO))
}

pub(super) fn money(d: Decimal, currency: Currency) -> Amount {
    // Keeps the minor-unit digits ("49.00", not "49") so amounts read as money.
    let mut d = billing::round(d, currency);
    d.rescale(currency.minor_units());
    Amount(d)
}

/// One subscription's lines of a run, before grouping into invoices.
struct Charged {
    subscriber: UserId,
    vendor: VendorId,
    currency: Currency,
    lines: Vec<InvoiceLine>,
}

impl Services {
    /// Closes `period` (platform finance): creates its invoices and payouts. Returns the run
    /// and whether this call closed the month (false when it was closed before).
    #[tracing::instrument(level = "debug", skip_all, fields(period = period))]
    pub async fn run_billing(
        &self,
        who: &Principal,
        period: &str,
    ) -> Result<(BillingRun, bool), CoreError> {
        who.require(Role::PlatformFinance)?;
        let period = Period::parse(period).map_err(|e| CoreError::invalid("period", e))?;
        self.close_month(period).await
    }

    /// Closes `period` (see [`Services::run_billing`]), whoever asks.
    pub(super) async fn close_month(
        &self,
        period: Period,
    ) -> Result<(BillingRun, bool), CoreError> {
        let now = self.clock.now();
        if period.end() > now {
            return Err(CoreError::invalid(
                "period",
                format!(
                    "{period} has not ended; it can be closed from {}",
                    crate::rfc3339(period.end())
                ),
            ));
        }
        let runs = self.store.list_billing_runs().await?;
        let label = period.to_string();
        let existing = runs.iter().find(|r| r.period == label).cloned();
        if let Some(done) = existing
            .as_ref()
            .filter(|r| r.status == RunStatus::Completed)
        {
            // Pushes that failed last time (the processor was down) are retried here.
            self.push_invoices(&label).await;
            return Ok((done.clone(), false));
        }
        if existing.is_none()
            && let Some(last) = runs.last()
        {
            let next = Period::parse(&last.period)
                .map_err(CoreError::internal)?
                .next();
            if last.status != RunStatus::Completed || period != next {
                return Err(CoreError::Conflict(format!(
                    "months close in order: the next one to close is {}",
                    if last.status == RunStatus::Completed {
                        next.to_string()
                    } else {
                        last.period.clone()
                    }
                )));
            }
        }
        let mut run = existing.unwrap_or(BillingRun {
            period: label.clone(),
            status: RunStatus::Running,
            invoices: 0,
            started_at: now,
            completed_at: None,
            problems: Vec::new(),
        });
        self.store.put_billing_run(&run).await?;
        let closed: Vec<Period> = runs
            .iter()
            .filter(|r| r.status == RunStatus::Completed)
            .filter_map(|r| Period::parse(&r.period).ok())
            .filter(|p| *p < period)
            .collect();
        let (charged, problems) = self.charge_all(period, &closed).await?;
        for problem in &problems {
            tracing::warn!(subscription.id = %problem.subscription_id, period = %label, reason = %problem.message, "a subscription cannot be rated");
        }
        let invoices = group(period, charged, now);
        for chunk in invoices.chunks(INVOICES_PER_WRITE) {
            self.store.put_invoices(chunk).await?;
        }
        self.pay_out(period).await?;
        let invoices = self.count_invoices(&label).await?;
        run.status = RunStatus::Completed;
        run.invoices = invoices;
        run.completed_at = Some(self.clock.now());
        run.problems = problems;
        self.store.put_billing_run(&run).await?;
        self.push_invoices(&label).await;
        // This call closed the month (a month with nothing to bill is closed all the same).
        Ok((run, true))
    }

    /// The lines of every subscription that existed during `period`, and the subscriptions
    /// that could not be rated.
    async fn charge_all(
        &self,
        period: Period,
        closed: &[Period],
    ) -> Result<(Vec<Charged>, Vec<RunProblem>), CoreError> {
        let counted: HashMap<SubscriptionId, Counted> = self
            .store
            .usage_totals(period.start(), period.end())
            .await?
            .into_iter()
            .collect();
        let late = self.late_usage(closed).await?;
        let mut feeds: HashMap<FeedId, Option<Feed>> = HashMap::new();
        let mut charged = Vec::new();
        let mut problems = Vec::new();
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let subs = self.store.list_all_subscriptions(&page).await?;
            for sub in subs.items {
                if sub.created_at >= period.end() {
                    continue;
                }
                if !feeds.contains_key(&sub.feed_id) {
                    let feed = match self.store.get_feed(&sub.tenant_id, &sub.feed_id).await {
                        Ok(feed) => Some(feed),
                        Err(CoreError::NotFound(_)) => None,
                        Err(e) => return Err(e),
                    };
                    feeds.insert(sub.feed_id.clone(), feed);
                }
                let problem = |message: String| RunProblem {
                    subscription_id: sub.id.clone(),
                    feed_id: sub.feed_id.clone(),
                    message,
                };
                let Some(feed) = feeds.get(&sub.feed_id).and_then(Option::as_ref) else {
                    problems.push(problem("its feed no longer exists".into()));
                    continue;
                };
                let version = sub.plan_version_at(period.start());
                let Some(plan) = feed.plan_version(&sub.plan_id, version) else {
                    problems.push(problem(format!(
                        "it is on version {version} of plan `{}`, which the feed no longer has",
                        sub.plan_id
                    )));
                    continue;
                };
                let deliveries = counted.get(&sub.id).copied().unwrap_or_default();
                let mut lines = self.lines(&sub, feed, plan, period, deliveries);
                if let Some(months) = late.get(&sub.id) {
                    // Late deliveries of a month are priced at the version it was rated at.
                    lines.extend(adjustments(&sub, months, |month| {
                        feed.plan_version(&sub.plan_id, sub.plan_version_at(month.start()))
                            .filter(|p| p.currency == plan.currency)
                            .unwrap_or(plan)
                    }));
                }
                if !lines.is_empty() {
                    charged.push(Charged {
                        subscriber: sub.subscriber_id.clone(),
                        vendor: sub.tenant_id.clone(),
                        currency: plan.currency,
                        lines,
                    });
                }
            }
            match subs.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        Ok((charged, problems))
    }

    /// The fee and usage lines of one subscription for `period`.
    fn lines(
        &self,
        sub: &Subscription,
        feed: &Feed,
        plan: &Plan,
        period: Period,
        counted: Counted,
    ) -> Vec<InvoiceLine> {
        let deliveries = counted.usage;
        let share = billing::active_share(&sub.history, period);
        let line = |kind, description: String, quantity, unit_price, amount| InvoiceLine {
            subscription_id: sub.id.clone(),
            feed_id: feed.id.clone(),
            plan_id: plan.id.clone(),
            plan_version: plan.version,
            kind,
            service_period: period.to_string(),
            description,
            quantity,
            unit_price,
            amount,
        };
        let mut lines = Vec::new();
        if share > Decimal::ZERO {
            let percent = (share * Decimal::ONE_HUNDRED).round_dp(2);
            lines.push(line(
                LineKind::Fee,
                format!(
                    "{} plan of {}, {period}: monthly fee, active {percent}% of the month",
                    plan.name, feed.name
                ),
                amount(share.round_dp(6)),
                money(plan.monthly_fee.0, plan.currency),
                money(billing::prorated_fee(plan, share), plan.currency),
            ));
        }
        if share > Decimal::ZERO || deliveries > 0 {
            let total = billing::usage_amount(plan, deliveries);
            let unit = if deliveries == 0 {
                Decimal::ZERO
            } else {
                (billing::usage_price(plan, deliveries) / Decimal::from(deliveries)).round_dp(8)
            };
            lines.push(line(
                LineKind::Usage,
                format!(
                    "{} plan of {}, {period}: {deliveries} deliveries ({} included)",
                    plan.name, feed.name, plan.included_deliveries
                ),
                amount(Decimal::from(deliveries)),
                amount(unit),
                money(total, plan.currency),
            ));
        }
        if counted.backfill > 0 {
            let backfill = counted.backfill;
            let total = billing::backfill_amount(plan, deliveries, backfill);
            lines.push(line(
                LineKind::Backfill,
                format!(
                    "{} plan of {}, {period}: {backfill} backfill records",
                    plan.name, feed.name
                ),
                amount(Decimal::from(backfill)),
                amount(billing::backfill_unit_price(plan, deliveries, backfill)),
                money(total, plan.currency),
            ));
        }
        lines
    }

    /// Deliveries of recently closed months counted after their run: per subscription, each
    /// such month with (billed, counted now). Usage is counted in the hour it is acknowledged,
    /// so a closed month gains counts only from acknowledgements in flight while it closed;
    /// the last [`LATE_USAGE_MONTHS`] closed months are compared, which bounds a run's cost
    /// by those months' counters instead of the whole history.
    async fn late_usage(
        &self,
        closed: &[Period],
    ) -> Result<HashMap<SubscriptionId, Vec<(Period, u64, u64)>>, CoreError> {
        let mut late: HashMap<SubscriptionId, Vec<(Period, u64, u64)>> = HashMap::new();
        let recent = &closed[closed.len().saturating_sub(LATE_USAGE_MONTHS)..];
        for month in recent {
            let billed: HashMap<SubscriptionId, u64> = self
                .store
                .billed_totals(&month.to_string())
                .await?
                .into_iter()
                .collect();
            for (sub, counted) in self.store.usage_totals(month.start(), month.end()).await? {
                let counted = counted.usage;
                let already = billed.get(&sub).copied().unwrap_or(0);
                if counted > already {
                    late.entry(sub)
                        .or_default()
                        .push((*month, already, counted));
                }
            }
        }
        Ok(late)
    }

    /// Stores the payouts of `period` from its stored invoices (a payout already stored stays).
    async fn pay_out(&self, period: Period) -> Result<(), CoreError> {
        let label = period.to_string();
        let mut totals: BTreeMap<(VendorId, &'static str), (Currency, Decimal, u64)> =
            BTreeMap::new();
        let filter = InvoiceFilter {
            period: Some(label.clone()),
            ..InvoiceFilter::default()
        };
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let invoices = self.store.list_invoices(&filter, &page).await?;
            for inv in invoices.items {
                let entry = totals
                    .entry((inv.vendor_id.clone(), inv.currency.code()))
                    .or_insert((inv.currency, Decimal::ZERO, 0));
                entry.1 += inv.total.0;
                entry.2 += 1;
            }
            match invoices.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        for ((vendor, code), (currency, gross, count)) in totals {
            let percent = self
                .settings
                .vendor_fee_percent
                .get(&vendor)
                .copied()
                .unwrap_or(self.settings.platform_fee_percent);
            let fee = billing::platform_fee(gross, percent, currency);
            let payout = Payout {
                id: PayoutId::from_uuid(crate::id::derive(&["pay", &label, vendor.as_str(), code])),
                vendor_id: vendor,
                period: label.clone(),
                currency,
                gross: money(gross, currency),
                platform_fee_percent: amount(percent),
                platform_fee: money(fee, currency),
                net: money(gross - fee, currency),
                invoices: count,
                status: PayoutStatus::Statement,
                transfer_id: None,
                transfer_error: None,
                transfers_refused: 0,
                transfer_retry_at: None,
                transferable: true,
                revision: 1,
            };
            self.store.put_payout(&payout).await?;
        }
        Ok(())
    }

    async fn count_invoices(&self, period: &str) -> Result<u64, CoreError> {
        let filter = InvoiceFilter {
            period: Some(period.to_owned()),
            ..InvoiceFilter::default()
        };
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        let mut n = 0;
        loop {
            let invoices = self.store.list_invoices(&filter, &page).await?;
            n += invoices.items.len() as u64;
            match invoices.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(n),
            }
        }
    }

    /// Invoices the caller may see, filtered.
    pub async fn list_invoices(
        &self,
        who: &Principal,
        mut filter: InvoiceFilter,
        page: &PageRequest,
    ) -> Result<Page<Invoice>, CoreError> {
        match scope(who)? {
            Scope::All => {}
            Scope::Vendor(v) => {
                if filter.vendor.as_ref().is_some_and(|f| *f != v) {
                    return Ok(Page::empty());
                }
                filter.vendor = Some(v);
            }
            Scope::Subscriber(u) => {
                if filter.subscriber.as_ref().is_some_and(|f| *f != u) {
                    return Ok(Page::empty());
                }
                filter.subscriber = Some(u);
            }
        }
        if let Some(p) = &filter.period {
            Period::parse(p).map_err(|e| CoreError::invalid("period", e))?;
        }
        self.store.list_invoices(&filter, page).await
    }

    /// One invoice, if the caller may see it; 404 otherwise.
    pub async fn get_invoice(&self, who: &Principal, id: &InvoiceId) -> Result<Invoice, CoreError> {
        let scope = scope(who)?;
        let invoice = self.store.get_invoice(id).await?;
        let visible = match scope {
            Scope::All => true,
            Scope::Vendor(v) => invoice.vendor_id == v,
            Scope::Subscriber(u) => invoice.subscriber_id == u,
        };
        if visible {
            Ok(invoice)
        } else {
            Err(CoreError::NotFound("invoice"))
        }
    }

    /// Payouts: platform finance sees every vendor's, vendor finance its own.
    pub async fn list_payouts(
        &self,
        who: &Principal,
        period: Option<&str>,
    ) -> Result<Vec<Payout>, CoreError> {
        if let Some(p) = period {
            Period::parse(p).map_err(|e| CoreError::invalid("period", e))?;
        }
        if who.has_role(Role::PlatformFinance) || who.has_role(Role::PlatformAdmin) {
            return self.store.list_payouts(period, None).await;
        }
        let vendor = who.tenant_with(Role::VendorFinance).map_err(|_| {
            CoreError::Forbidden("payouts are for platform and vendor finance".into())
        })?;
        self.store.list_payouts(period, Some(vendor)).await
    }
}

/// Groups charged subscriptions into invoices per (subscriber, vendor, currency).
fn group(period: Period, charged: Vec<Charged>, now: crate::Timestamp) -> Vec<Invoice> {
    let label = period.to_string();
    let mut by_key: BTreeMap<(UserId, VendorId, &'static str), Invoice> = BTreeMap::new();
    for c in charged {
        let key = (c.subscriber.clone(), c.vendor.clone(), c.currency.code());
        let invoice = by_key.entry(key).or_insert_with(|| Invoice {
            id: InvoiceId::from_uuid(crate::id::derive(&[
                "inv",
                &label,
                c.subscriber.as_str(),
                c.vendor.as_str(),
                c.currency.code(),
            ])),
            period: label.clone(),
            vendor_id: c.vendor.clone(),
            subscriber_id: c.subscriber.clone(),
            currency: c.currency,
            lines: Vec::new(),
            total: Amount::default(),
            status: InvoiceStatus::Open,
            created_at: now,
            stripe_invoice_id: None,
            collection_method: None,
            hosted_invoice_url: None,
            due_at: None,
            payment_failed_at: None,
            subscriptions_paused_at: None,
        });
        invoice.lines.extend(c.lines);
    }
    by_key
        .into_values()
        .map(|mut inv| {
            let total: Decimal = inv.lines.iter().map(|l| l.amount.0).sum();
            inv.total = money(total, inv.currency);
            inv
        })
        .collect()
}

/// Adjustment lines for a subscription's late deliveries: per month, (billed, counted now),
/// each priced at `priced(month)`.
fn adjustments<'a>(
    sub: &Subscription,
    months: &[(Period, u64, u64)],
    priced: impl Fn(Period) -> &'a Plan,
) -> Vec<InvoiceLine> {
    let mut lines = Vec::new();
    for &(month, already, now_counted) in months {
        let plan = priced(month);
        let late = now_counted - already;
        let price = billing::adjustment_amount(plan, already, now_counted);
        lines.push(InvoiceLine {
            subscription_id: sub.id.clone(),
            feed_id: sub.feed_id.clone(),
            plan_id: plan.id.clone(),
            plan_version: plan.version,
            kind: LineKind::Adjustment,
            service_period: month.to_string(),
            description: format!(
                "{} plan: {late} deliveries of {month} counted after it was billed",
                plan.name
            ),
            quantity: amount(Decimal::from(late)),
            unit_price: amount((price / Decimal::from(late)).round_dp(8)),
            amount: money(price, plan.currency),
        });
    }
    lines
}
