//! Extractors: the authenticated caller, JSON bodies with field paths in their errors, query
//! strings, path ids and the `Idempotency-Key` header. Each rejection is a problem+json.

use crate::AppState;
use crate::problem::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use wharf_core::domain::Principal;
use wharf_core::error::field_of_message;
use wharf_core::{CoreError, FieldError};

/// The verified caller: a user's bearer token or an API key.
pub struct Caller(pub Principal);

impl std::ops::Deref for Caller {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl Caller {
    /// The scope idempotency keys of this caller live in.
    pub fn scope(&self) -> String {
        match &self.0 {
            Principal::User { id, .. } => id.to_string(),
            Principal::ApiKey { id, .. } => id.to_string(),
        }
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(parts: &Parts) -> Result<&str, CoreError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| CoreError::Unauthenticated("missing Authorization header".into()))?;
    let value = value
        .to_str()
        .map_err(|_| CoreError::Unauthenticated("malformed Authorization header".into()))?;
    wharf_core::credentials::bearer(value).ok_or_else(|| {
        CoreError::Unauthenticated("expected `Authorization: Bearer <token>`".into())
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        Ok(Caller(state.services.authenticate(token).await?))
    }
}

/// The client's address, where the server knows it (the connection's peer under
/// `wharf serve`, API Gateway's source address on Lambda).
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(ClientAddress(peer.map(|c| c.0.ip())))
    }
}

/// A JSON body, plus its raw bytes (for idempotency fingerprints).
pub struct JsonBody<T> {
    /// The parsed body.
    pub value: T,
    /// The bytes as received.
    pub raw: Bytes,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!(
                    "the body is larger than {} bytes",
                    crate::MAX_BODY_BYTES
                ))
            } else {
                ApiError::MalformedBody(e.body_text())
            }
        })?;
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// Parses JSON, reporting syntax errors as 400 and data errors as 422 with the field path.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    use serde_json::error::Category;
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    match value {
        Ok(v) => {
            de.end()
                .map_err(|e| ApiError::MalformedBody(format!("malformed JSON: {e}")))?;
            Ok(v)
        }
        Err(e) => {
            let inner = e.inner();
            match inner.classify() {
                Category::Data => {
                    let message = inner.to_string();
                    let message = message
                        .split(" at line ")
                        .next()
                        .unwrap_or(&message)
                        .to_owned();
                    let mut path = e.path().to_string();
                    if path == "." {
                        path.clear();
                    }
                    let (field, message) = match field_of_message(&message) {
                        Some((field, inner)) => (Some(field), inner.to_owned()),
                        None => (named_field(&message), message.clone()),
                    };
                    if let Some(field) = field {
                        path = if path.is_empty() {
                            field.to_owned()
                        } else {
                            format!("{path}.{field}")
                        };
                    }
                    Err(ApiError::Core(CoreError::Validation(vec![
                        FieldError::new(path, message),
                    ])))
                }
                _ => Err(ApiError::MalformedBody(format!("malformed JSON: {inner}"))),
            }
        }
    }
}

/// The field a "missing field `x`" message is about (the path stops at its parent).
fn named_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// A query string, rejected as 422 when it does not fit `T`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::Core(CoreError::invalid("query", e.body_text())))
    }
}

/// Path parameters; anything that does not parse is a 404 (no such object).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|_| ApiError::Core(CoreError::NotFound("resource")))
    }
}

/// The optional `Idempotency-Key` header of creating POSTs.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        match value.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(IdempotencyKey(Some(k.to_owned())))
            }
            _ => Err(ApiError::Core(CoreError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ))),
        }
    }
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 200 (default 50; larger values are clamped).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// As the services' page request.
    pub fn page(self) -> wharf_core::PageRequest {
        wharf_core::PageRequest {
            limit: self.limit.unwrap_or(0),
            cursor: self.cursor,
        }
    }
}

/// A body read as bytes with its media type, for endpoints that accept several formats.
pub struct RawBody {
    /// The media type without parameters, lowercase.
    pub media_type: String,
    /// The bytes as received.
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let media_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!(
                    "the body is larger than {} bytes",
                    crate::MAX_BODY_BYTES
                ))
            } else {
                ApiError::MalformedBody(e.body_text())
            }
        })?;
        Ok(RawBody { media_type, bytes })
    }
}
