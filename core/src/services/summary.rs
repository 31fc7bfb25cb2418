//! The month as finance reads it: per vendor and currency, what subscribers were invoiced
//! (gross), the platform's fee, the vendor's net, and how much of the invoiced has been paid
//! and is still outstanding.

use super::Services;
use super::billing::{Scope, money, scope};
use crate::billing::Period;
use crate::domain::{InvoiceFilter, InvoiceStatus, Principal};
use crate::money::{Amount, Currency};
use crate::{CoreError, PageRequest, VendorId};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

/// One vendor's month in one currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VendorSummary {
    /// The vendor.
    pub vendor_id: VendorId,
    /// The currency of every amount of the row.
    pub currency: Currency,
    /// What the vendor's subscribers were invoiced.
    pub gross: Amount,
    /// The platform's fee out of the gross.
    pub platform_fee: Amount,
    /// What the vendor is paid: gross less the platform's fee.
    pub net: Amount,
    /// Of the gross, invoices paid.
    pub paid: Amount,
    /// Of the gross, invoices open or whose payment failed.
    pub outstanding: Amount,
    /// Invoices of the month (void ones included).
    pub invoices: u64,
}

/// The answer of `GET /v1/billing/summary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BillingSummary {
    /// The month (`YYYY-MM`).
    pub period: String,
    /// One row per vendor and currency with invoices in the month, by vendor id.
    pub vendors: Vec<VendorSummary>,
}

impl Services {
    /// The month's summary: platform finance sees every vendor, vendor finance its own.
    pub async fn billing_summary(
        &self,
        who: &Principal,
        period: &str,
    ) -> Result<BillingSummary, CoreError> {
        Period::parse(period).map_err(|e| CoreError::invalid("period", e))?;
        if let Scope::Subscriber(_) = scope(who)? {
            return Err(CoreError::Forbidden(
                "the billing summary is for platform and vendor finance".into(),
            ));
        }
        let mut rows: BTreeMap<(VendorId, &'static str), VendorSummary> = BTreeMap::new();
        let filter = InvoiceFilter {
            period: Some(period.to_owned()),
            ..InvoiceFilter::default()
        };
        let mut sums: BTreeMap<(VendorId, &'static str), (Decimal, Decimal, u64)> = BTreeMap::new();
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let invoices = self.list_invoices(who, filter.clone(), &page).await?;
            for inv in &invoices.items {
                let key = (inv.vendor_id.clone(), inv.currency.code());
                let (paid, outstanding, count) = sums.entry(key).or_default();
                *count += 1;
                match inv.status {
                    InvoiceStatus::Paid => *paid += inv.total.0,
                    InvoiceStatus::Open | InvoiceStatus::Failed => *outstanding += inv.total.0,
                    InvoiceStatus::Void => {}
                }
            }
            match invoices.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        for payout in self.list_payouts(who, Some(period)).await? {
            let key = (payout.vendor_id.clone(), payout.currency.code());
            let (paid, outstanding, invoices) = sums.remove(&key).unwrap_or_default();
            rows.insert(
                key,
                VendorSummary {
                    vendor_id: payout.vendor_id,
                    currency: payout.currency,
                    gross: payout.gross,
                    platform_fee: payout.platform_fee,
                    net: payout.net,
                    paid: money(paid, payout.currency),
                    outstanding: money(outstanding, payout.currency),
                    invoices,
                },
            );
        }
        Ok(BillingSummary {
            period: period.to_owned(),
            vendors: rows.into_values().collect(),
        })
    }
}
