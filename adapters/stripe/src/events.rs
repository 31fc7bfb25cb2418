//! Stripe's webhook events, read into the payment events Wharf acts on: `invoice.paid` and
//! `invoice.payment_succeeded` (paid), `invoice.payment_failed` (failed), about the invoice
//! named in the Stripe invoice's `metadata.wharf_invoice_id`. Everything else is `Other`.

use crate::StripeClient;
use crate::signature::verify;
use serde::Deserialize;
use wharf_core::domain::{InvoiceStatus, PaymentEvent, PaymentEventKind};
use wharf_core::{CoreError, InvoiceId, Timestamp};

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
        verify(&self.webhook_secret, signature, body, now.unix_timestamp())
            .map_err(|e| CoreError::Unauthenticated(format!("Stripe-Signature: {e}")))?;
        let event: Event = serde_json::from_slice(body)
            .map_err(|e| CoreError::invalid("", format!("not a Stripe event: {e}")))?;
        if event.id.is_empty() {
            return Err(CoreError::invalid("id", "a Stripe event has an id"));
        }
        let status = match event.kind.as_str() {
            "invoice.paid" | "invoice.payment_succeeded" => Some(InvoiceStatus::Paid),
            "invoice.payment_failed" => Some(InvoiceStatus::Failed),
            _ => None,
        };
        let object = event.data.object;
        let invoice = object
            .metadata
            .get("wharf_invoice_id")
            .and_then(|id| id.parse::<InvoiceId>().ok());
        let kind = match (status, invoice) {
            (Some(status), Some(invoice)) => PaymentEventKind::Invoice {
                invoice,
                status,
                processor_invoice: object.id,
            },
            _ => PaymentEventKind::Other,
        };
        Ok(PaymentEvent { id: event.id, kind })
    }
}
