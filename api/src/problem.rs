//! Errors as RFC 9457 `application/problem+json`. Every failure of every handler goes through
//! `ApiError`, mapped in one `match`; 5xx bodies are opaque and the cause is logged once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};
use wharf_core::domain::{BodyError, MAX_RECORDS_PER_REQUEST};
use wharf_core::{CoreError, FieldError};

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"type": "/problems/validation", "title": "Validation failed", "status": 422,
    "detail": "1 field is invalid", "errors": [{"path": "plans[0].currency", "message": "`usdx` is not a supported ISO 4217 currency code"}]}))]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The quota reached, for quota problems (`sources_per_tenant`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// The quota's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// Every way a request can fail.
#[derive(Debug)]
pub enum ApiError {
    /// A failure from the services.
    Core(CoreError),
    /// The body is not JSON.
    MalformedBody(String),
    /// The body is larger than allowed.
    TooLarge(String),
    /// The body is not of the media type the route takes (named).
    UnsupportedMediaType(&'static str),
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// A signed callback (Stripe's) whose signature is missing, wrong or stale.
    BadSignature(String),
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        ApiError::Core(e)
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Malformed(detail) => ApiError::MalformedBody(detail),
            BodyError::Invalid(field) => ApiError::Core(CoreError::Validation(vec![field])),
            BodyError::TooMany => ApiError::TooLarge(format!(
                "at most {MAX_RECORDS_PER_REQUEST} records per request"
            )),
        }
    }
}

fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: Option<String>,
    errors: Vec<FieldError>,
) -> Response {
    let body = Problem {
        kind: format!("/problems/{kind}"),
        title: title.into(),
        status: status.as_u16(),
        detail,
        errors,
        quota: None,
        limit: None,
    };
    problem_response(status, body)
}

fn problem_response(status: StatusCode, body: Problem) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use StatusCode as S;
        match self {
            ApiError::Core(e) => core_problem(e),
            ApiError::MalformedBody(detail) => problem(
                S::BAD_REQUEST,
                "malformed",
                "Malformed request",
                Some(detail),
                vec![],
            ),
            ApiError::BadSignature(detail) => problem(
                S::BAD_REQUEST,
                "bad-signature",
                "Signature not valid",
                Some(detail),
                vec![],
            ),
            ApiError::TooLarge(detail) => problem(
                S::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request too large",
                Some(detail),
                vec![],
            ),
            ApiError::UnsupportedMediaType(wanted) => problem(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                Some(format!("send the body as {wanted}")),
                vec![],
            ),
            ApiError::MethodNotAllowed => problem(
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                None,
                vec![],
            ),
        }
    }
}

/// The problem document of a failure from the services; its status is the error's own.
fn core_problem(e: CoreError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match e {
        CoreError::NotFound(what) => problem(
            status,
            "not-found",
            "Not found",
            Some(format!("{what} not found")),
            vec![],
        ),
        CoreError::Conflict(detail) => {
            problem(status, "conflict", "Conflict", Some(detail), vec![])
        }
        CoreError::Gone(detail) => problem(status, "gone", "Gone", Some(detail), vec![]),
        CoreError::Validation(errors) => {
            let n = errors.len();
            let detail = format!("{n} field{} invalid", if n == 1 { " is" } else { "s are" });
            problem(
                status,
                "validation",
                "Validation failed",
                Some(detail),
                errors,
            )
        }
        CoreError::Unauthenticated(detail) => {
            let mut res = problem(
                status,
                "unauthenticated",
                "Unauthenticated",
                Some(detail),
                vec![],
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            res
        }
        CoreError::Forbidden(detail) => {
            problem(status, "forbidden", "Forbidden", Some(detail), vec![])
        }
        CoreError::QuotaExceeded { quota, limit } => quota_problem(status, quota, limit),
        CoreError::TooManyRequests {
            message,
            retry_after,
        } => too_many(status, message, retry_after),
        CoreError::Unavailable(source) => {
            tracing::warn!(error = %source, "dependency unavailable");
            let mut res = problem(
                status,
                "unavailable",
                "Service unavailable",
                Some("retry later".into()),
                vec![],
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
        CoreError::Internal(source) => {
            tracing::error!(error = %source, chain = ?source, "internal error");
            problem(status, "internal", "Internal error", None, vec![])
        }
    }
}

/// A quota reached: the problem names it and its value.
fn quota_problem(status: StatusCode, quota: &str, limit: u64) -> Response {
    problem_response(
        status,
        Problem {
            kind: "/problems/quota".into(),
            title: "Quota reached".into(),
            status: status.as_u16(),
            detail: Some(format!("over the quota `{quota}` of {limit}")),
            errors: vec![],
            quota: Some(quota.into()),
            limit: Some(limit),
        },
    )
}

/// A 429 with `Retry-After`.
fn too_many(status: StatusCode, message: String, retry_after: std::time::Duration) -> Response {
    let mut res = problem(
        status,
        "too-many-requests",
        "Too many requests",
        Some(message),
        vec![],
    );
    let secs = retry_after.as_secs().max(1).to_string();
    if let Ok(value) = HeaderValue::from_str(&secs) {
        res.headers_mut().insert(header::RETRY_AFTER, value);
    }
    res
}

/// The 404 for unknown routes.
pub async fn no_route() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        Some("no such route".into()),
        vec![],
    )
}

fn documented(codes: &[(u16, &str)]) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    codes
        .iter()
        .map(|(code, desc)| {
            let content = ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                .build();
            (
                code.to_string(),
                ResponseBuilder::new()
                    .description(*desc)
                    .content(PROBLEM_JSON, content)
                    .build()
                    .into(),
            )
        })
        .collect()
}

macro_rules! error_set {
    ($(#[$m:meta])* $name:ident: $($code:literal => $desc:literal),+ $(,)?) => {
        $(#[$m])*
        pub struct $name;
        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                documented(&[$(($code, $desc)),+])
            }
        }
    };
}

error_set!(
    /// Errors of authenticated reads.
    ReadErrors:
    400 => "Malformed query",
    401 => "Missing, invalid or expired credentials",
    403 => "The caller's role does not allow this",
    404 => "No such object in the caller's tenant",
    422 => "Invalid query parameters",
    503 => "Temporarily unavailable; retry",
);
error_set!(
    /// Errors of authenticated writes.
    WriteErrors:
    400 => "Malformed JSON",
    401 => "Missing, invalid or expired credentials",
    403 => "The caller's role does not allow this",
    404 => "No such object in the caller's tenant",
    409 => "Conflicts with the current state, a quota is reached (`quota` names it), or an Idempotency-Key reused with another body",
    413 => "Body too large",
    415 => "Body is not application/json",
    422 => "Invalid fields; `errors` names each one",
    429 => "Too many requests of this kind; retry after `Retry-After` seconds",
    503 => "Temporarily unavailable; retry",
);
error_set!(
    /// Errors of uploads of files (models).
    UploadErrors:
    401 => "Missing, invalid or expired credentials",
    403 => "The caller's role does not allow this",
    413 => "Body too large",
    415 => "Body is not application/octet-stream",
    422 => "Not a file the engine can run; `errors` says what is wrong",
    503 => "Temporarily unavailable; retry",
);
error_set!(
    /// Errors of the upload URLs Wharf serves itself (the token is the credential).
    UploadUrlErrors:
    404 => "The token is not one Wharf made for this",
    410 => "The upload URL expired",
    413 => "Body too large",
    415 => "Body is not application/octet-stream",
    422 => "An empty body",
    503 => "Temporarily unavailable; retry",
);
error_set!(
    /// Errors of unauthenticated writes.
    PublicWriteErrors:
    400 => "Malformed JSON",
    401 => "Invalid credentials",
    409 => "Conflicts with existing data, or an Idempotency-Key reused with another body",
    413 => "Body too large",
    415 => "Body is not application/json",
    422 => "Invalid fields; `errors` names each one",
    429 => "Too many attempts from this address or for this account; retry after `Retry-After` seconds",
    503 => "Temporarily unavailable; retry; `Retry-After` says when",
);
error_set!(
    /// Errors of unauthenticated writes that carry a mailed token.
    TokenErrors:
    400 => "Malformed JSON",
    404 => "The token is not one Wharf made for this",
    409 => "Conflicts with existing data (an invitation already used)",
    410 => "The link expired, or was used",
    413 => "Body too large",
    415 => "Body is not application/json",
    422 => "Invalid fields; `errors` names each one",
    429 => "Too many attempts from this address; retry after `Retry-After` seconds",
    503 => "Temporarily unavailable; retry; `Retry-After` says when",
);
error_set!(
    /// Errors of signed callbacks from a payment processor.
    CallbackErrors:
    400 => "Missing, wrong or stale signature; nothing changed",
    404 => "No payment processor configured",
    503 => "Temporarily unavailable; retry",
);
error_set!(
    /// Errors of public reads.
    PublicReadErrors:
    400 => "Malformed query",
    404 => "Not found",
    422 => "Invalid query parameters",
);
