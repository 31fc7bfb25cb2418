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
    },
    /// Something Wharf does not act on.
    Other,
}
