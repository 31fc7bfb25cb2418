//! Invoices, billing runs and payouts.

use crate::money::{Amount, Currency};
use crate::{FeedId, InvoiceId, PayoutId, SubscriptionId, Timestamp, UserId, VendorId};
use serde::{Deserialize, Serialize};

/// What an invoice line charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LineKind {
    /// The plan's monthly fee, prorated by the share of the month the subscription was active.
    Fee,
    /// The month's acknowledged deliveries, rated through the plan's tiers.
    Usage,
    /// Deliveries of an earlier, already billed month that were counted after it closed.
    Adjustment,
    /// History delivered with a new subscription (its backfill), acknowledged in the month.
    Backfill,
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceLine {
    /// The subscription charged.
    pub subscription_id: SubscriptionId,
    /// Its feed.
    pub feed_id: FeedId,
    /// Its plan.
    pub plan_id: String,
    /// The plan's version, whose prices the line is rated at.
    #[serde(default = "super::first_plan_version")]
    pub plan_version: u32,
    /// What is charged.
    pub kind: LineKind,
    /// The month the quantity belongs to (`YYYY-MM`); earlier than the invoice's for adjustments.
    pub service_period: String,
    /// Human-readable.
    pub description: String,
    /// Deliveries, or for a fee the share of the month (0 to 1).
    pub quantity: Amount,
    /// Price of one unit (for usage, the average over the tiers, to 8 places).
    pub unit_price: Amount,
    /// The line's amount, rounded half-up to the currency's minor unit.
    pub amount: Amount,
}

/// Where an invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum InvoiceStatus {
    /// Issued, not paid yet.
    Open,
    /// Paid.
    Paid,
    /// A payment attempt failed.
    Failed,
    /// Cancelled.
    Void,
}

impl InvoiceStatus {
    /// The lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Failed => "failed",
            InvoiceStatus::Void => "void",
        }
    }
}

/// What one subscriber owes one vendor for one month, in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invoice {
    /// Derived from (period, subscriber, vendor, currency): a run repeated creates no second one.
    pub id: InvoiceId,
    /// The month billed (`YYYY-MM`).
    pub period: String,
    /// The selling vendor.
    pub vendor_id: VendorId,
    /// The buyer.
    pub subscriber_id: UserId,
    /// Currency of every amount.
    pub currency: Currency,
    /// Fee, usage and adjustment lines.
    pub lines: Vec<InvoiceLine>,
    /// Sum of the rounded lines.
    pub total: Amount,
    /// Payment state.
    pub status: InvoiceStatus,
    /// When the run created it.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// The Stripe invoice, once pushed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stripe_invoice_id: Option<String>,
    /// How Stripe collects it, once pushed: charged to the subscriber's saved payment method,
    /// or sent for the subscriber to pay.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub collection_method: Option<CollectionMethod>,
    /// Stripe's page where the subscriber sees and pays it, once pushed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hosted_invoice_url: Option<String>,
    /// When a sent invoice is due (30 days after it was sent): unpaid then, dunning counts
    /// from here.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub due_at: Option<Timestamp>,
    /// When a payment of it first failed (dunning counts from here); cleared when paid.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub payment_failed_at: Option<Timestamp>,
    /// When dunning paused the subscriber's subscriptions to the vendor for it.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub subscriptions_paused_at: Option<Timestamp>,
}

/// How the payment processor collects an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CollectionMethod {
    /// Charged to the customer's default payment method.
    ChargeAutomatically,
    /// Sent to the customer, who pays on the hosted page.
    SendInvoice,
}

/// A change to an invoice's collection state (its lines and amounts never change). Each
/// store applies it with [`InvoiceChange::apply`] to the invoice it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceChange {
    /// The new payment state; a paid invoice stays paid whatever comes after.
    pub status: Option<InvoiceStatus>,
    /// The processor's invoice.
    pub stripe_invoice_id: Option<String>,
    /// How the processor collects it.
    pub collection_method: Option<CollectionMethod>,
    /// The processor's page for it.
    pub hosted_invoice_url: Option<String>,
    /// When it is due, if it was sent to be paid.
    pub due_at: Option<Timestamp>,
    /// A failed payment at this instant (kept if one failed before).
    pub failed_at: Option<Timestamp>,
    /// Dunning paused the subscriptions at this instant.
    pub subscriptions_paused_at: Option<Timestamp>,
}

impl Invoice {
    /// Since when it is overdue: its first failed payment, or its due date once passed.
    pub fn overdue_since(&self, now: Timestamp) -> Option<Timestamp> {
        if self.status == InvoiceStatus::Paid || self.status == InvoiceStatus::Void {
            return None;
        }
        self.payment_failed_at
            .or(self.due_at.filter(|due| *due <= now))
    }
}

impl InvoiceChange {
    /// Applies the change to `invoice`.
    pub fn apply(&self, invoice: &mut Invoice) {
        match self.status {
            Some(_) if invoice.status == InvoiceStatus::Paid => {}
            Some(InvoiceStatus::Paid) => {
                invoice.status = InvoiceStatus::Paid;
                invoice.payment_failed_at = None;
            }
            Some(status) => invoice.status = status,
            None => {}
        }
        if invoice.status != InvoiceStatus::Paid && self.failed_at.is_some() {
            invoice.payment_failed_at = invoice.payment_failed_at.or(self.failed_at);
        }
        if self.stripe_invoice_id.is_some() {
            invoice
                .stripe_invoice_id
                .clone_from(&self.stripe_invoice_id);
        }
        if self.collection_method.is_some() {
            invoice.collection_method = self.collection_method;
        }
        if self.hosted_invoice_url.is_some() {
            invoice
                .hosted_invoice_url
                .clone_from(&self.hosted_invoice_url);
        }
        // The first push's due date stands: a push that raced it, finishing later, does not
        // move it.
        if invoice.due_at.is_none() {
            invoice.due_at = self.due_at;
        }
        if self.subscriptions_paused_at.is_some() {
            invoice.subscriptions_paused_at = self.subscriptions_paused_at;
        }
    }
}

/// Whether a billing run has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunStatus {
    /// Started; a crash leaves it here, and running the period again finishes it.
    Running,
    /// Every invoice and payout of the period is stored.
    Completed,
}

/// The closing of one month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BillingRun {
    /// The month (`YYYY-MM`).
    pub period: String,
    /// Progress.
    pub status: RunStatus,
    /// Invoices of the period.
    pub invoices: u64,
    /// When it was first started.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub started_at: Timestamp,
    /// When it completed.
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub completed_at: Option<Timestamp>,
    /// Subscriptions the run could not rate, left out of its invoices: one that cannot be
    /// rated never holds the month (or the months after it) from closing for everyone else.
    #[serde(default)]
    pub problems: Vec<RunProblem>,
}

/// A subscription a billing run could not rate, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunProblem {
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Its feed.
    pub feed_id: FeedId,
    /// What is wrong.
    pub message: String,
}

/// What a vendor is paid for one month in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Payout {
    /// Derived from (period, vendor, currency).
    pub id: PayoutId,
    /// The vendor.
    pub vendor_id: VendorId,
    /// The month (`YYYY-MM`).
    pub period: String,
    /// Currency of the amounts.
    pub currency: Currency,
    /// Sum of the vendor's invoice totals for the month.
    pub gross: Amount,
    /// The platform's percentage applied.
    pub platform_fee_percent: Amount,
    /// The platform's fee, rounded.
    pub platform_fee: Amount,
    /// Gross minus the platform fee.
    pub net: Amount,
    /// Invoices counted.
    pub invoices: u64,
    /// Where paying the vendor stands.
    #[serde(default)]
    pub status: PayoutStatus,
    /// The Stripe transfer that paid the net to the vendor's connected account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    /// Why the last transfer attempt failed (it is attempted again on the schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_error: Option<String>,
    /// Transfer attempts Stripe refused outright: each next attempt is a new request (a
    /// refused request's idempotency key would answer the same refusal forever).
    #[serde(default)]
    pub transfers_refused: u32,
    /// Whether the net is paid through Stripe Connect: payouts of months closed before
    /// Wharf made transfers were settled another way and stay statements.
    #[serde(default)]
    pub transferable: bool,
    /// Grows by one on every change of the transfer state (optimistic concurrency: two
    /// schedule ticks never both record an attempt).
    #[serde(default)]
    pub revision: u64,
    /// After a failed transfer, when the next attempt is due.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub transfer_retry_at: Option<Timestamp>,
}

/// Where paying a vendor its net stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PayoutStatus {
    /// A statement only: the vendor has no connected account able to receive transfers, or
    /// there is nothing to pay.
    #[default]
    Statement,
    /// Waiting for the month's invoices to the vendor to be paid.
    Pending,
    /// The net was transferred (`transfer_id`).
    Transferred,
    /// The last transfer attempt failed (`transfer_error`); the schedule tries again.
    Failed,
}

/// A vendor's connected account at the payment processor, where its payouts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutAccount {
    /// The processor's account id.
    pub account: String,
    /// Whether the account finished onboarding and can receive transfers.
    pub payouts_enabled: bool,
}

/// A transfer of a payout's net to a vendor's connected account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// The connected account.
    pub account: String,
    /// The amount, in the currency's minor unit.
    pub amount_minor: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// The payout paid.
    pub payout: PayoutId,
    /// What the vendor sees.
    pub description: String,
}

/// What a page where a subscriber saves a payment method is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSetup {
    /// The subscriber's customer at the processor.
    pub customer: String,
    /// The subscriber, told back in the completed setup's event.
    pub subscriber: UserId,
    /// The currency its invoices are mostly in (lowercase ISO 4217).
    pub currency: String,
    /// Where the page sends the subscriber when done.
    pub success_url: String,
    /// Where the page sends the subscriber on cancel.
    pub cancel_url: String,
}

/// One of Wharf's invoice lines as the processor's invoice item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceItem {
    /// The line's number in Wharf's invoice (kept in the item's metadata).
    pub line: usize,
    /// The amount in the currency's minor unit.
    pub amount_minor: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// What the line charges for.
    pub description: String,
}

/// The processor's view of an invoice it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteInvoice {
    /// `draft`, `open`, `paid`, `void` or `uncollectible`.
    pub status: String,
    /// Its page, once finalized.
    pub hosted_invoice_url: Option<String>,
}

/// What the processor answered to finalizing an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FinalizedInvoice {
    /// The processor's page for the invoice.
    pub hosted_invoice_url: Option<String>,
}

/// A subscriber's customer at the payment processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentCustomer {
    /// The processor's customer id.
    pub customer: String,
    /// The payment method invoices are charged to, once the subscriber saved one.
    pub payment_method: Option<String>,
}

/// Which invoices to list; `None` matches any.
#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    /// Only this month (`YYYY-MM`).
    pub period: Option<String>,
    /// Only this vendor's.
    pub vendor: Option<VendorId>,
    /// Only this subscriber's.
    pub subscriber: Option<UserId>,
    /// Only in this state.
    pub status: Option<InvoiceStatus>,
}

/// A payment processor's event about one of Wharf's invoices, as its signed callback says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The processor's id of the event: each is applied once.
    pub id: String,
    /// What happened.
    pub kind: PaymentEventKind,
}

/// What a payment event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEventKind {
    /// Wharf's invoice was paid, or its payment failed.
    Invoice {
        /// Wharf's invoice.
        invoice: crate::InvoiceId,
        /// `Paid` or `Failed`.
        status: InvoiceStatus,
        /// The processor's id of the invoice.
        processor_invoice: Option<String>,
        /// The processor's page for the invoice.
        hosted_invoice_url: Option<String>,
    },
    /// A subscriber saved a payment method for its customer (a completed setup).
    PaymentMethodSaved {
        /// The subscriber the setup was made for.
        subscriber: UserId,
        /// The processor's customer it is attached to.
        customer: String,
        /// The processor's id of the payment method.
        payment_method: String,
    },
    /// A vendor's connected account changed: whether it can receive payouts now.
    AccountUpdated {
        /// The vendor the account was made for.
        vendor: VendorId,
        /// The processor's account id.
        account: String,
        /// Onboarding finished and transfers can land.
        payouts_enabled: bool,
    },
    /// Something Wharf does not act on.
    Other,
}
