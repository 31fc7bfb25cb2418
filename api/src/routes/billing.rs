//! Finance: billing runs, invoices (JSON or CSV) and vendor payouts.

use crate::AppState;
use crate::csv_export;
use crate::extract::{ApiPath, ApiQuery, Caller, JsonBody};
use crate::problem::{ApiError, CallbackErrors, ReadErrors, WriteErrors};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::InvoiceFilter;
use wharf_core::domain::{BillingRun, Invoice, InvoiceStatus, Payout};
use wharf_core::services::{BillingSummary, PayoutAccountLink};
use wharf_core::{CoreError, InvoiceId, Page, PageRequest, UserId, VendorId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_billing))
        .routes(routes!(list_invoices))
        .routes(routes!(get_invoice))
        .routes(routes!(list_payouts))
        .routes(routes!(billing_summary))
        .routes(routes!(stripe_webhook))
        .routes(routes!(payment_method_page))
        .routes(routes!(payout_account_link))
}

/// The onboarding page of the calling vendor's Stripe Connect account (an Express account,
/// made on the first call), where payouts are transferred once onboarding is complete
/// (`account.updated`). Each call answers a new page. Vendor admins only; 404 when Stripe is
/// not configured.
#[utoipa::path(post, path = "/v1/vendors/me/payout-account", tag = "billing",
    security(("bearer" = [])),
    responses((status = 201, body = PayoutAccountLink), WriteErrors))]
async fn payout_account_link(
    State(s): State<AppState>,
    who: Caller,
) -> Result<(StatusCode, Json<PayoutAccountLink>), ApiError> {
    let link = s.services.payout_account_link(&who).await?;
    Ok((StatusCode::CREATED, Json(link)))
}

/// Where a subscriber saves a payment method.
#[derive(Debug, serde::Serialize, ToSchema)]
struct PaymentMethodPage {
    /// A Stripe Checkout page (setup mode) for the subscriber's customer; once completed, the
    /// subscriber's invoices are charged to the saved method.
    url: String,
}

/// A page where the calling subscriber saves a payment method (Stripe Checkout in `setup`
/// mode; a new page each call). Invoices of a subscriber with a saved method are charged to
/// it; the others are sent to be paid on Stripe's hosted page. 404 when Stripe is not
/// configured.
#[utoipa::path(post, path = "/v1/billing/payment-method", tag = "billing",
    security(("bearer" = [])),
    responses((status = 201, body = PaymentMethodPage), WriteErrors))]
async fn payment_method_page(
    State(s): State<AppState>,
    who: Caller,
) -> Result<(StatusCode, Json<PaymentMethodPage>), ApiError> {
    let url = s.services.payment_method_page(&who).await?;
    Ok((StatusCode::CREATED, Json(PaymentMethodPage { url })))
}

/// The month to close.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// A calendar month in UTC, `YYYY-MM`, that has ended.
    #[schema(example = "2026-11")]
    period: String,
}

/// Closes a month (platform finance): invoices per subscriber, vendor and currency, and vendor
/// payouts. Idempotent: 201 when this call closed the month (with or without invoices), 200 when it
/// was already closed. Months close in order; late usage of a closed month is billed as an
/// adjustment on the next one.
#[utoipa::path(post, path = "/v1/billing/runs", tag = "billing", request_body = RunRequest,
    security(("bearer" = [])),
    responses((status = 201, body = BillingRun), (status = 200, body = BillingRun), WriteErrors))]
async fn run_billing(
    State(s): State<AppState>,
    who: Caller,
    body: JsonBody<RunRequest>,
) -> Result<(StatusCode, Json<BillingRun>), ApiError> {
    let (run, created) = s.services.run_billing(&who, &body.value.period).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(run)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct InvoiceQuery {
    /// Only this month (`YYYY-MM`).
    period: Option<String>,
    /// Only this vendor's.
    #[param(value_type = Option<String>)]
    vendor_id: Option<VendorId>,
    /// Only this subscriber's.
    #[param(value_type = Option<String>)]
    subscriber_id: Option<UserId>,
    /// Only in this state.
    status: Option<InvoiceStatus>,
    /// Page size, 1 to 200 (default 50). Ignored for CSV, which carries every match.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const CSV_HEADER: [&str; 12] = [
    "invoice_id",
    "period",
    "vendor_id",
    "subscriber_id",
    "subscription_id",
    "kind",
    "service_period",
    "description",
    "quantity",
    "unit_price",
    "amount",
    "currency",
];

/// Invoices as CSV: one row per line item.
fn csv(invoices: &[Invoice]) -> Response {
    let rows = invoices.iter().flat_map(|inv| {
        inv.lines.iter().map(move |line| {
            vec![
                inv.id.to_string(),
                inv.period.clone(),
                inv.vendor_id.to_string(),
                inv.subscriber_id.to_string(),
                line.subscription_id.to_string(),
                serde_json::to_value(line.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                line.service_period.clone(),
                line.description.clone(),
                line.quantity.to_string(),
                line.unit_price.to_string(),
                line.amount.to_string(),
                inv.currency.to_string(),
            ]
        })
    });
    csv_export::answer(&CSV_HEADER, rows)
}

/// Invoices the caller may see: platform finance all, vendor finance its tenant's, a
/// subscriber its own. JSON pages, or with `Accept: text/csv` every match as CSV with one row
/// per line item.
#[utoipa::path(get, path = "/v1/invoices", tag = "billing", params(InvoiceQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Invoices; CSV under `Accept: text/csv`",
        content((Page<Invoice> = "application/json"), (String = "text/csv"))), ReadErrors))]
async fn list_invoices(
    State(s): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
) -> Result<Response, ApiError> {
    let filter = InvoiceFilter {
        period: q.period,
        vendor: q.vendor_id,
        subscriber: q.subscriber_id,
        status: q.status,
    };
    if !csv_export::wanted(&headers) {
        let page = PageRequest {
            limit: q.limit.unwrap_or(0),
            cursor: q.cursor,
        };
        return Ok(Json(s.services.list_invoices(&who, filter, &page).await?).into_response());
    }
    let mut all = Vec::new();
    let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
    loop {
        let got = s
            .services
            .list_invoices(&who, filter.clone(), &page)
            .await?;
        all.extend(got.items);
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return Ok(csv(&all)),
        }
    }
}

/// One invoice, as JSON or (with `Accept: text/csv`) CSV; 404 unless the caller may see it.
#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "billing", params(("id" = InvoiceId, Path)),
    security(("bearer" = [])),
    responses((status = 200, description = "The invoice; CSV under `Accept: text/csv`",
        content((Invoice = "application/json"), (String = "text/csv"))), ReadErrors))]
async fn get_invoice(
    State(s): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<InvoiceId>,
) -> Result<Response, ApiError> {
    let invoice = s.services.get_invoice(&who, &id).await?;
    Ok(if csv_export::wanted(&headers) {
        csv(std::slice::from_ref(&invoice))
    } else {
        Json(invoice).into_response()
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PayoutQuery {
    /// Only this month (`YYYY-MM`).
    period: Option<String>,
}

/// What each vendor is paid per month and currency: gross, platform fee, net. Platform
/// finance sees every vendor; vendor finance its own. JSON, or CSV under `Accept: text/csv`.
#[utoipa::path(get, path = "/v1/payouts", tag = "billing", params(PayoutQuery),
    security(("bearer" = [])), responses((status = 200, description = "Payouts; CSV under `Accept: text/csv`",
        content((Vec<Payout> = "application/json"), (String = "text/csv"))), ReadErrors))]
async fn list_payouts(
    State(s): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<PayoutQuery>,
) -> Result<Response, ApiError> {
    let payouts = s.services.list_payouts(&who, q.period.as_deref()).await?;
    if !csv_export::wanted(&headers) {
        return Ok(Json(payouts).into_response());
    }
    let header = [
        "payout_id",
        "vendor_id",
        "period",
        "currency",
        "gross",
        "platform_fee_percent",
        "platform_fee",
        "net",
        "invoices",
    ];
    let rows = payouts.iter().map(|p| {
        vec![
            p.id.to_string(),
            p.vendor_id.to_string(),
            p.period.clone(),
            p.currency.to_string(),
            p.gross.to_string(),
            p.platform_fee_percent.to_string(),
            p.platform_fee.to_string(),
            p.net.to_string(),
            p.invoices.to_string(),
        ]
    });
    Ok(csv_export::answer(&header, rows))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SummaryQuery {
    /// The month (`YYYY-MM`).
    period: String,
}

/// A month per vendor and currency: gross invoiced, platform fee, net, and how much of the
/// gross is paid and outstanding. Platform finance sees every vendor; vendor finance its own.
#[utoipa::path(get, path = "/v1/billing/summary", tag = "billing", params(SummaryQuery),
    security(("bearer" = [])), responses((status = 200, body = BillingSummary), ReadErrors))]
async fn billing_summary(
    State(s): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> Result<Json<BillingSummary>, ApiError> {
    Ok(Json(s.services.billing_summary(&who, &q.period).await?))
}

/// What Wharf did with a Stripe event.
#[derive(Debug, serde::Serialize, ToSchema)]
struct StripeReceipt {
    /// Always true on a 200.
    received: bool,
    /// `applied`, `duplicate` (seen before) or `ignored` (not an invoice payment event).
    outcome: String,
}

/// Stripe's payment events (`invoice.paid`, `invoice.payment_succeeded`,
/// `invoice.payment_failed`, `setup_intent.succeeded` of a page made by
/// `POST /v1/billing/payment-method`, `account.updated` of a vendor's payout account), signed with the endpoint secret (`Stripe-Signature`, checked
/// with a 5-minute tolerance). Each event id is applied once. 404 when Stripe is not
/// configured.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "billing",
    request_body(content = Object, content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256>")),
    responses((status = 200, body = StripeReceipt), CallbackErrors))]
async fn stripe_webhook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<StripeReceipt>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let outcome = s
        .services
        .stripe_event(signature, &body)
        .await
        .map_err(|e| match e {
            // Stripe's convention: a signature that does not verify is a bad request.
            CoreError::Unauthenticated(detail) => ApiError::BadSignature(detail),
            e => ApiError::Core(e),
        })?;
    Ok(Json(StripeReceipt {
        received: true,
        outcome: match outcome {
            wharf_core::services::StripeEventOutcome::Applied => "applied",
            wharf_core::services::StripeEventOutcome::Duplicate => "duplicate",
            wharf_core::services::StripeEventOutcome::Ignored => "ignored",
        }
        .into(),
    }))
}
