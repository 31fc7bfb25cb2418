//! Stripe's webhook events, read into the payment events Wharf acts on: `invoice.paid` and
//! `invoice.payment_succeeded` (paid), `invoice.payment_failed` (failed), about the invoice
//! named in the Stripe invoice's `metadata.wharf_invoice_id`; `setup_intent.succeeded` of a
//! setup Wharf started (its `metadata.wharf_subscriber_id`), which saved a payment method;
//! `account.updated` of a vendor's connected account (its `metadata.wharf_vendor_id`).
//! Everything else is `Other`.

use crate::StripeClient;
use crate::signature::verify;
use serde::Deserialize;
use wharf_core::domain::{InvoiceStatus, PaymentEvent, PaymentEventKind};
use wharf_core::{CoreError, InvoiceId, Timestamp, UserId, VendorId};

/// The parts of a Stripe event Wharf reads.
#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    data: Data,
}

#[derive(Deserialize, Default)]
struct Data {
    #[serde(default)]
    object: StripeObject,
}

#[derive(Deserialize, Default)]
struct StripeObject {
    id: Option<String>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
    #[serde(default)]
    hosted_invoice_url: Option<String>,
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    payment_method: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    payouts_enabled: Option<bool>,
    #[serde(default)]
    capabilities: std::collections::HashMap<String, serde_json::Value>,
}

impl StripeClient {
    /// Checks the `Stripe-Signature` header and reads the event.
    pub(crate) fn read_event(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: Timestamp,
    ) -> Result<PaymentEvent, CoreError> {
        let signature = signature
            .ok_or_else(|| CoreError::Unauthenticated("missing Stripe-Signature header".into()))?;
        // The account endpoint's secret, or the Connect endpoint's (connected accounts'
        // events, such as `account.updated`, come from an endpoint of their own).
        let mut checked = Err(String::new());
        for secret in &self.webhook_secrets {
            checked =
                verify(secret, signature, body, now.unix_timestamp()).map_err(|e| e.to_string());
            if checked.is_ok() {
                break;
            }
        }
        checked.map_err(|e| CoreError::Unauthenticated(format!("Stripe-Signature: {e}")))?;
        let event: Event = serde_json::from_slice(body)
            .map_err(|e| CoreError::invalid("", format!("not a Stripe event: {e}")))?;
        if event.id.is_empty() {
            return Err(CoreError::invalid("id", "a Stripe event has an id"));
        }
        let kind = match event.kind.as_str() {
            "invoice.paid" | "invoice.payment_succeeded" => {
                invoice_event(event.data.object, InvoiceStatus::Paid)
            }
            "invoice.payment_failed" => invoice_event(event.data.object, InvoiceStatus::Failed),
            "setup_intent.succeeded" => setup_event(event.data.object),
            "account.updated" => account_event(event.data.object),
            _ => PaymentEventKind::Other,
        };
        Ok(PaymentEvent { id: event.id, kind })
    }
}

/// An invoice event about one of Wharf's invoices, else `Other`.
fn invoice_event(object: StripeObject, status: InvoiceStatus) -> PaymentEventKind {
    match object
        .metadata
        .get("wharf_invoice_id")
        .and_then(|id| id.parse::<InvoiceId>().ok())
    {
        Some(invoice) => PaymentEventKind::Invoice {
            invoice,
            status,
            processor_invoice: object.id,
            hosted_invoice_url: object.hosted_invoice_url,
        },
        None => PaymentEventKind::Other,
    }
}

/// A succeeded setup Wharf started for a subscriber, else `Other`.
fn setup_event(object: StripeObject) -> PaymentEventKind {
    let subscriber = object
        .metadata
        .get("wharf_subscriber_id")
        .and_then(|id| id.parse::<UserId>().ok());
    match (subscriber, object.customer, object.payment_method) {
        (Some(subscriber), Some(customer), Some(payment_method))
            if object.status.as_deref() == Some("succeeded") =>
        {
            PaymentEventKind::PaymentMethodSaved {
                subscriber,
                customer,
                payment_method,
            }
        }
        _ => PaymentEventKind::Other,
    }
}

/// A change of a connected account Wharf made for a vendor, else `Other`. Payouts are enabled
/// when Stripe says so and the `transfers` capability is active (what a transfer needs).
fn account_event(object: StripeObject) -> PaymentEventKind {
    let vendor = object
        .metadata
        .get("wharf_vendor_id")
        .and_then(|id| id.parse::<VendorId>().ok());
    match (vendor, object.id) {
        (Some(vendor), Some(account)) => PaymentEventKind::AccountUpdated {
            vendor,
            account,
            payouts_enabled: object.payouts_enabled == Some(true)
                && object
                    .capabilities
                    .get("transfers")
                    .and_then(|c| c.as_str())
                    == Some("active"),
        },
        _ => PaymentEventKind::Other,
    }
}
