//! The payment port on Stripe's REST API: customers, invoices and their items, finalizing and
//! sending, Checkout in `setup` mode and the customer's default payment method, Connect
//! accounts, their onboarding links and transfers to them, each POST
//! with an `Idempotency-Key` so Stripe answers a retried call with the first call's result;
//! and Stripe's signed webhook calls, checked (`signature`) and read into typed events
//! (`events`).
//!
//! A small client over reqwest rather than a generated SDK (see README, "The Stripe client"):
//! form-encoded POSTs and the few fields Wharf reads back from each answer. Answers are read
//! leniently, so Stripe adding or omitting fields never breaks a call. The API base is
//! configurable for tests.

mod events;
pub mod signature;

use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;
use wharf_core::domain::{
    CollectionMethod, Email, FinalizedInvoice, Invoice, InvoiceItem, PaymentEvent, PaymentSetup,
    RemoteInvoice, TransferRequest,
};
use wharf_core::ports::Payments;
use wharf_core::{CoreError, UserId, VendorId};

/// Stripe API version the form fields below are written against.
const API_VERSION: &str = "2024-06-20";
const TIMEOUT: Duration = Duration::from_secs(30);
/// Days a sent invoice gives the subscriber to pay.
const DAYS_UNTIL_DUE: u32 = 30;

/// An amount in Wharf's minor unit of `currency` as Stripe's API states it: the same, but
/// for the Icelandic króna, which Wharf counts in whole krónur and Stripe's API still in
/// hundredths (an amount of 100 is 1 króna, and must be a multiple of 100).
fn stripe_amount(amount_minor: i64, currency: &str) -> i64 {
    if currency.eq_ignore_ascii_case("isk") {
        amount_minor.saturating_mul(100)
    } else {
        amount_minor
    }
}

/// Talks to Stripe (or a fake at another base URL) with a secret key, and reads the webhook
/// calls Stripe signs with the endpoint's signing secret.
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    secret_key: String,
    /// The signing secrets of the account's webhook endpoint and, when Connect events come
    /// from an endpoint of their own, of that one.
    webhook_secrets: Vec<String>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The fields Wharf reads from Stripe's answers.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    hosted_invoice_url: Option<String>,
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
            webhook_secrets: vec![webhook_secret.to_owned()],
        })
    }

    /// Also accepts events signed with the Connect endpoint's `secret` (connected accounts'
    /// events are sent by an endpoint of their own, with its own signing secret).
    #[must_use]
    pub fn with_connect_webhook_secret(mut self, secret: &str) -> StripeClient {
        self.webhook_secrets.push(secret.to_owned());
        self
    }

    /// GETs `/v1/{path}` with `query`; reads the answer as `T`.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CoreError> {
        let request = self
            .http
            .get(format!("{}/v1/{path}", self.base))
            .query(query);
        self.send(request, &format!("GET /v1/{path}")).await
    }

    /// POSTs `form` to `/v1/{path}` with `key`; returns the created object's id.
    async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, String)],
    ) -> Result<String, CoreError> {
        self.call(path, key, form).await?.id.ok_or_else(|| {
            CoreError::internal(format!("Stripe answered POST /v1/{path} without an id"))
        })
    }

    /// POSTs `form` to `/v1/{path}` with `key`; returns the fields Wharf reads.
    async fn call(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, String)],
    ) -> Result<Answer, CoreError> {
        let request = self
            .http
            .post(format!("{}/v1/{path}", self.base))
            .header("Idempotency-Key", key)
            .form(form);
        self.send(request, &format!("POST /v1/{path}")).await
    }

    /// Sends `request` with the key and API version and reads the answer as `T`. An outage,
    /// a rate limit, a request under the same key still running (409) and an unreadable
    /// success are `Unavailable` (asked again with the same key, Stripe answers the same);
    /// other refusals are `Internal`, with Stripe's message.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, CoreError> {
        let res = request
            .bearer_auth(&self.secret_key)
            .header("Stripe-Version", API_VERSION)
            .send()
            .await
            .map_err(|e| CoreError::unavailable(format!("Stripe did not answer: {e}")))?;
        let status = res.status();
        let body = res
            .bytes()
            .await
            .map_err(|e| CoreError::unavailable(format!("Stripe's answer broke off: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                CoreError::unavailable(format!("Stripe's answer could not be read: {e}"))
            });
        }
        let message = serde_json::from_slice::<Failure>(&body)
            .map(|f| f.error.message)
            .unwrap_or_default();
        let e = format!("Stripe answered {status} to {what}: {message}");
        Err(
            if status.is_server_error() || matches!(status.as_u16(), 409 | 429) {
                CoreError::unavailable(e)
            } else {
                CoreError::internal(e)
            },
        )
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
        method: CollectionMethod,
    ) -> Result<String, CoreError> {
        let mut form = vec![
            ("customer", customer.to_owned()),
            ("currency", invoice.currency.code().to_owned()),
            ("auto_advance", "false".into()),
            ("pending_invoice_items_behavior", "exclude".into()),
            (
                "description",
                format!("Wharf {} ({})", invoice.period, invoice.vendor_id),
            ),
            ("metadata[wharf_invoice_id]", invoice.id.to_string()),
            ("metadata[wharf_period]", invoice.period.clone()),
            ("metadata[wharf_vendor_id]", invoice.vendor_id.to_string()),
        ];
        match method {
            CollectionMethod::ChargeAutomatically => {
                form.push(("collection_method", "charge_automatically".into()));
            }
            CollectionMethod::SendInvoice => {
                form.push(("collection_method", "send_invoice".into()));
                form.push(("days_until_due", DAYS_UNTIL_DUE.to_string()));
            }
        }
        self.post("invoices", key, &form).await
    }

    async fn add_invoice_item(
        &self,
        key: &str,
        customer: &str,
        processor_invoice: &str,
        item: &InvoiceItem,
    ) -> Result<(), CoreError> {
        self.post(
            "invoiceitems",
            key,
            &[
                ("customer", customer.to_owned()),
                ("invoice", processor_invoice.to_owned()),
                (
                    "amount",
                    stripe_amount(item.amount_minor, &item.currency).to_string(),
                ),
                ("currency", item.currency.clone()),
                ("description", item.description.clone()),
                ("metadata[wharf_line]", item.line.to_string()),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn fetch_invoice(&self, processor_invoice: &str) -> Result<RemoteInvoice, CoreError> {
        #[derive(Deserialize)]
        struct Fetched {
            #[serde(default)]
            status: String,
            #[serde(default)]
            hosted_invoice_url: Option<String>,
        }
        let fetched: Fetched = self
            .get(&format!("invoices/{processor_invoice}"), &[])
            .await?;
        Ok(RemoteInvoice {
            status: fetched.status,
            hosted_invoice_url: fetched.hosted_invoice_url,
        })
    }

    async fn invoice_lines(&self, processor_invoice: &str) -> Result<Vec<usize>, CoreError> {
        #[derive(Deserialize)]
        struct Listed {
            data: Vec<Item>,
            #[serde(default)]
            has_more: bool,
        }
        #[derive(Deserialize)]
        struct Item {
            id: String,
            #[serde(default)]
            metadata: std::collections::HashMap<String, String>,
        }
        let mut lines = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![
                ("invoice", processor_invoice.to_owned()),
                ("limit", "100".to_owned()),
            ];
            if let Some(after) = &after {
                query.push(("starting_after", after.clone()));
            }
            let page: Listed = self.get("invoiceitems", &query).await?;
            lines.extend(
                page.data
                    .iter()
                    .filter_map(|i| i.metadata.get("wharf_line")?.parse::<usize>().ok()),
            );
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => return Ok(lines),
            }
        }
    }

    async fn finalize_invoice(
        &self,
        key: &str,
        processor_invoice: &str,
        auto_advance: bool,
    ) -> Result<FinalizedInvoice, CoreError> {
        let answer = self
            .call(
                &format!("invoices/{processor_invoice}/finalize"),
                key,
                &[("auto_advance", auto_advance.to_string())],
            )
            .await?;
        Ok(FinalizedInvoice {
            hosted_invoice_url: answer.hosted_invoice_url,
        })
    }

    async fn send_invoice(&self, key: &str, processor_invoice: &str) -> Result<(), CoreError> {
        self.post(&format!("invoices/{processor_invoice}/send"), key, &[])
            .await
            .map(|_| ())
    }

    async fn setup_page(&self, key: &str, setup: &PaymentSetup) -> Result<String, CoreError> {
        let subscriber = setup.subscriber.to_string();
        let answer = self
            .call(
                "checkout/sessions",
                key,
                &[
                    ("mode", "setup".into()),
                    ("customer", setup.customer.clone()),
                    ("currency", setup.currency.clone()),
                    ("success_url", setup.success_url.clone()),
                    ("cancel_url", setup.cancel_url.clone()),
                    ("client_reference_id", subscriber.clone()),
                    ("metadata[wharf_subscriber_id]", subscriber.clone()),
                    (
                        "setup_intent_data[metadata][wharf_subscriber_id]",
                        subscriber,
                    ),
                ],
            )
            .await?;
        answer
            .url
            .ok_or_else(|| CoreError::internal("Stripe answered a Checkout Session without a url"))
    }

    async fn create_connected_account(
        &self,
        key: &str,
        vendor: &VendorId,
    ) -> Result<String, CoreError> {
        self.post(
            "accounts",
            key,
            &[
                ("type", "express".into()),
                ("capabilities[transfers][requested]", "true".into()),
                ("metadata[wharf_vendor_id]", vendor.to_string()),
            ],
        )
        .await
    }

    async fn onboarding_link(
        &self,
        key: &str,
        account: &str,
        refresh_url: &str,
        return_url: &str,
    ) -> Result<String, CoreError> {
        let answer = self
            .call(
                "account_links",
                key,
                &[
                    ("account", account.to_owned()),
                    ("type", "account_onboarding".into()),
                    ("refresh_url", refresh_url.to_owned()),
                    ("return_url", return_url.to_owned()),
                ],
            )
            .await?;
        answer
            .url
            .ok_or_else(|| CoreError::internal("Stripe answered an account link without a url"))
    }

    async fn transfer(&self, key: &str, transfer: &TransferRequest) -> Result<String, CoreError> {
        self.post(
            "transfers",
            key,
            &[
                (
                    "amount",
                    stripe_amount(transfer.amount_minor, &transfer.currency).to_string(),
                ),
                ("currency", transfer.currency.clone()),
                ("destination", transfer.account.clone()),
                ("description", transfer.description.clone()),
                ("transfer_group", transfer.payout.to_string()),
                ("metadata[wharf_payout_id]", transfer.payout.to_string()),
            ],
        )
        .await
    }

    async fn set_default_payment_method(
        &self,
        key: &str,
        customer: &str,
        payment_method: &str,
    ) -> Result<(), CoreError> {
        self.post(
            &format!("customers/{customer}"),
            key,
            &[(
                "invoice_settings[default_payment_method]",
                payment_method.to_owned(),
            )],
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::stripe_amount;

    #[test]
    fn krona_amounts_are_stated_in_hundredths_and_others_as_they_are() {
        assert_eq!(stripe_amount(1500, "isk"), 150_000, "1,500 krónur");
        assert_eq!(stripe_amount(1500, "usd"), 1500, "15.00 dollars");
        assert_eq!(stripe_amount(1500, "jpy"), 1500, "1,500 yen");
    }
}
