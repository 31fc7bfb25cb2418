//! `Idempotency-Key` on creating POSTs: the same key and body replay the first successful
//! answer; the same key with another body, or while the first request runs, is a 409. A
//! failed request releases its key, so a corrected retry can use it again. A secret shown in
//! the first answer is neither stored nor replayed: the replay names it in `withheld`. Keys
//! are kept a day.

use crate::AppState;
use crate::problem::ApiError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wharf_core::CoreError;
use wharf_core::domain::{IdempotencyState, StoredResponse};

/// A successful JSON answer.
pub struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    /// What a replay answers instead, when the answer shows a secret that must not be kept.
    replayed: Option<Vec<u8>>,
}

impl Reply {
    /// `201 Created` with `value` as JSON.
    pub fn created<T: serde::Serialize>(value: &T) -> Result<Reply, ApiError> {
        Self::with(StatusCode::CREATED, value)
    }

    /// `status` with `value` as JSON.
    pub fn with<T: serde::Serialize>(status: StatusCode, value: &T) -> Result<Reply, ApiError> {
        let body = serde_json::to_vec(value).map_err(CoreError::internal)?;
        Ok(Reply {
            status,
            body,
            replayed: None,
        })
    }

    /// `201 Created` with `value`, which shows a secret once: a replay of the same key
    /// answers `replayed` instead, and only that is stored.
    pub fn created_once<T: serde::Serialize>(value: &T, replayed: &T) -> Result<Reply, ApiError> {
        let mut reply = Self::created(value)?;
        reply.replayed = Some(serde_json::to_vec(replayed).map_err(CoreError::internal)?);
        Ok(reply)
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }
}

/// Runs `handler` at most once per (scope, key) and body.
pub async fn once<F, Fut>(
    state: &AppState,
    scope: &str,
    key: Option<String>,
    route: &str,
    raw: &[u8],
    handler: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let Some(key) = key else {
        return handler().await.map(IntoResponse::into_response);
    };
    // Keyed: a sign-up's body holds a password, and a stored plain hash of it could be
    // tested against guesses by whoever reads the database.
    let mut request = Vec::with_capacity(route.len() + 1 + raw.len());
    request.extend_from_slice(route.as_bytes());
    request.push(0);
    request.extend_from_slice(raw);
    let fingerprint = state.services.secrets.digest(&request);
    let store = &state.services.store;
    let now = state.services.clock.now();
    match store.begin(scope, &key, &fingerprint, now).await? {
        IdempotencyState::Completed(stored) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut res = Reply {
                status,
                body: stored.body,
                replayed: None,
            }
            .into_response();
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(res)
        }
        IdempotencyState::Conflict => Err(ApiError::Core(CoreError::Conflict(
            "this Idempotency-Key was used with another request, or that request is still running"
                .into(),
        ))),
        IdempotencyState::Started => match handler().await {
            Ok(mut reply) => {
                let stored = StoredResponse {
                    status: reply.status.as_u16(),
                    body: reply.replayed.take().unwrap_or_else(|| reply.body.clone()),
                };
                if let Err(e) = store.complete(scope, &key, &stored).await {
                    tracing::error!(error = %e, "could not store an idempotent response");
                }
                Ok(reply.into_response())
            }
            Err(e) => {
                if let Err(undo) = store.abandon(scope, &key).await {
                    tracing::error!(error = %undo, "could not release an idempotency key");
                }
                Err(e)
            }
        },
    }
}
