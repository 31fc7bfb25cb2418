//! Errors by meaning. Adapters map their library errors into these; the API maps these to
//! HTTP statuses in one place.

use serde::Serialize;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, by meaning rather than by origin.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The object does not exist, or the caller may not know that it does.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state (duplicate, wrong state, reused key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// What the request names existed once and is no longer usable (an expired link).
    #[error("gone: {0}")]
    Gone(String),
    /// The input breaks a rule; each error names the field it concerns.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Missing, malformed, expired or otherwise unacceptable credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller is known but its role does not allow this in its own tenant.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A tenant, subscriber or subscription has as many of something as its quota allows.
    #[error("quota exceeded: over the quota `{quota}` of {limit}")]
    QuotaExceeded {
        /// The quota's name, as configured (`sources_per_tenant`, …).
        quota: &'static str,
        /// Its value.
        limit: u64,
    },
    /// Too many requests of a kind in a while; the same request may succeed later.
    #[error("too many requests: {message}")]
    TooManyRequests {
        /// What was too many, with the limit.
        message: String,
        /// When trying again may succeed.
        retry_after: std::time::Duration,
    },
    /// A dependency is temporarily unavailable; retrying may succeed.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Source),
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(#[source] Source),
}

impl CoreError {
    /// A validation error on one field.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::Validation(vec![FieldError::new(path, message)])
    }

    /// Wraps an unexpected error.
    pub fn internal(e: impl Into<Source>) -> Self {
        CoreError::Internal(e.into())
    }

    /// Wraps a transient failure.
    pub fn unavailable(e: impl Into<Source>) -> Self {
        CoreError::Unavailable(e.into())
    }

    /// The HTTP status that says what went wrong: the one mapping every handler uses (the
    /// API's problem documents, and the WebSocket gateway's connect answers).
    pub fn status(&self) -> u16 {
        match self {
            CoreError::Validation(_) => 422,
            CoreError::Unauthenticated(_) => 401,
            CoreError::Forbidden(_) => 403,
            CoreError::NotFound(_) => 404,
            CoreError::Gone(_) => 410,
            CoreError::Conflict(_) | CoreError::QuotaExceeded { .. } => 409,
            CoreError::TooManyRequests { .. } => 429,
            CoreError::Unavailable(_) => 503,
            CoreError::Internal(_) => 500,
        }
    }

    /// What went wrong, without the kind in front (for a message that names the kind itself).
    pub fn reason(&self) -> String {
        match self {
            CoreError::NotFound(what) => format!("{what} not found"),
            CoreError::Conflict(m)
            | CoreError::Gone(m)
            | CoreError::Unauthenticated(m)
            | CoreError::Forbidden(m) => m.clone(),
            CoreError::Validation(errors) => errors
                .iter()
                .map(|e| format!("{} {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            CoreError::QuotaExceeded { quota, limit } => {
                format!("over the quota `{quota}` of {limit}")
            }
            CoreError::TooManyRequests { message, .. } => message.clone(),
            CoreError::Unavailable(source) | CoreError::Internal(source) => source.to_string(),
        }
    }

    /// The quota error of `quota`, whose value is `limit`.
    pub fn quota(quota: &'static str, limit: impl Into<u64>) -> Self {
        CoreError::QuotaExceeded {
            quota,
            limit: limit.into(),
        }
    }
}

/// One invalid field: where (a path such as `pipeline.rules[0].expr`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Path of the field in the request body, e.g. `plans[0].tiers[1].up_to`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The message of a deserialization error about one field of a value that is deserialized as
/// a whole (an internally tagged enum, whose fields serde cannot track): the JSON extractor
/// reads the field back into the error's path with [`field_of_message`].
pub fn field_message(field: &str, message: &str) -> String {
    format!("at `{field}`: {message}")
}

/// The field and message of a [`field_message`].
pub fn field_of_message(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("at `")?;
    let (field, message) = rest.split_once("`: ")?;
    Some((field, message))
}

/// Collects field errors across a whole input before failing, so the caller sees all of them.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// Records an error at `path`.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    /// The errors recorded.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.0
    }

    /// Records the outcome of a check that yields its own field errors.
    pub fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        self.0.extend(errors);
    }

    /// `Ok` when nothing was recorded.
    pub fn finish(self) -> Result<(), CoreError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CoreError::Validation(self.0))
        }
    }
}
