//! Domain entities and their validation rules.

pub mod address;
pub mod backfill;
pub mod billing;
pub mod delivery;
pub mod events;
pub mod feed;
pub mod identity;
pub mod model;
pub mod pipeline;
pub mod record;
pub mod requests;
pub mod source;
pub mod subscription;

pub use address::*;
pub use backfill::*;
pub use billing::*;
pub use delivery::*;
pub use events::*;
pub use feed::*;
pub use identity::*;
pub use model::*;
pub use pipeline::*;
pub use record::*;
pub use requests::*;
pub use source::*;
pub use subscription::*;

use serde::{Deserialize, Serialize};

/// The deployment shape the process runs as; some channels and source kinds need one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Shape {
    /// One process on SQLite.
    Local,
    /// Lambda functions on DynamoDB, SQS and SNS.
    Aws,
}

impl Shape {
    /// The name used in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Local => "local",
            Shape::Aws => "aws",
        }
    }
}

/// Checks a human-readable name: 1 to `max` characters, not blank, no control characters.
pub(crate) fn check_name(p: &mut crate::error::Problems, path: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        p.add(path, "must not be blank");
    } else if value.chars().count() > max {
        p.add(path, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        p.add(path, "must not contain control characters");
    }
}

/// Checks a machine name (`[a-z0-9_-]`, 1 to 64 characters).
pub(crate) fn is_slug(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
