//! The payment port on Stripe's REST API: the four calls an invoice push needs, each with an
//! `Idempotency-Key` so Stripe answers a retried call with the first call's result; and
//! Stripe's signed webhook calls, checked (`signature`) and read into typed events (`events`).
//!
//! A small client over reqwest rather than a generated SDK: four form-encoded POSTs and one id
//! read back from each answer. Answers are read leniently (only `id`), so Stripe adding or
//! omitting fields never breaks a push. The API base is configurable for tests.

mod events;
pub mod signature;

use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;
use wharf_core::domain::{Email, Invoice, PaymentEvent};
use wharf_core::ports::Payments;
use wharf_core::{CoreError, UserId};

/// Stripe API version the form fields below are written against.
const API_VERSION: &str = "2024-06-20";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Talks to Stripe (or a fake at another base URL) with a secret key, and reads the webhook
/// calls Stripe signs with the endpoint's signing secret.
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    secret_key: String,
    webhook_secret: String,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Failure {
    error: FailureDetail,
}

#[derive(Deserialize)]
struct FailureDetail {
    #[serde(default)]
    message: String,
}

impl StripeClient {
    /// A client for the API at `base` (`https://api.stripe.com`), checking webhook calls
    /// with the endpoint's `webhook_secret`.
    pub fn new(
        base: &str,
        secret_key: &str,
        webhook_secret: &str,
    ) -> Result<StripeClient, CoreError> {
        Ok(StripeClient {
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .map_err(CoreError::internal)?,
            base: base.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
            webhook_secret: webhook_secret.to_owned(),
        })
    }

    /// POSTs `form` to `/v1/{path}` with `key`; returns the created object's id.
    async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, String)],
    ) -> Result<String, CoreError> {
        let res = self
            .http
            .post(format!("{}/v1/{path}", self.base))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", key)
            .header("Stripe-Version", API_VERSION)
            .form(form)
            .send()
            .await
            .map_err(|e| CoreError::unavailable(format!("Stripe did not answer: {e}")))?;
        let status = res.status();
        let body = res
            .bytes()
            .await
            .map_err(|e| CoreError::unavailable(format!("Stripe's answer broke off: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice::<Created>(&body)
                .map(|c| c.id)
                .map_err(|e| CoreError::internal(format!("Stripe answered without an id: {e}")));
        }
        let message = serde_json::from_slice::<Failure>(&body)
            .map(|f| f.error.message)
            .unwrap_or_default();
        let e = format!("Stripe answered {status} to POST /v1/{path}: {message}");
        Err(if status.is_server_error() || status.as_u16() == 429 {
            CoreError::unavailable(e)
        } else {
            CoreError::internal(e)
        })
    }
}

#[async_trait]
impl Payments for StripeClient {
    fn parse_event(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: wharf_core::Timestamp,
    ) -> Result<PaymentEvent, CoreError> {
        self.read_event(signature, body, now)
    }

    async fn create_customer(
        &self,
        key: &str,
        subscriber: &UserId,
        email: &Email,
    ) -> Result<String, CoreError> {
        self.post(
            "customers",
            key,
            &[
                ("email", email.to_string()),
                ("metadata[wharf_subscriber_id]", subscriber.to_string()),
            ],
        )
        .await
    }

    async fn create_invoice(
        &self,
        key: &str,
        customer: &str,
        invoice: &Invoice,
    ) -> Result<String, CoreError> {
        self.post(
            "invoices",
            key,
            &[
                ("customer", customer.to_owned()),
                ("currency", invoice.currency.code().to_owned()),
                ("collection_method", "send_invoice".into()),
                ("days_until_due", "30".into()),
                ("auto_advance", "false".into()),
                ("pending_invoice_items_behavior", "exclude".into()),
                (
                    "description",
                    format!("Wharf {} ({})", invoice.period, invoice.vendor_id),
                ),
                ("metadata[wharf_invoice_id]", invoice.id.to_string()),
                ("metadata[wharf_period]", invoice.period.clone()),
                ("metadata[wharf_vendor_id]", invoice.vendor_id.to_string()),
            ],
        )
        .await
    }

    async fn add_invoice_item(
        &self,
        key: &str,
        customer: &str,
        processor_invoice: &str,
        amount_minor: i64,
        currency: &str,
        description: &str,
    ) -> Result<(), CoreError> {
        self.post(
            "invoiceitems",
            key,
            &[
                ("customer", customer.to_owned()),
                ("invoice", processor_invoice.to_owned()),
                ("amount", amount_minor.to_string()),
                ("currency", currency.to_owned()),
                ("description", description.to_owned()),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn finalize_invoice(&self, key: &str, processor_invoice: &str) -> Result<(), CoreError> {
        self.post(&format!("invoices/{processor_invoice}/finalize"), key, &[])
            .await
            .map(|_| ())
    }
}
