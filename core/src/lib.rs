//! Wharf's domain: typed ids, entities, validation rules, the ports adapters implement, and
//! the services that hold the business rules. Nothing here performs I/O; every effect goes
//! through a port (`ports`), so the same services run on SQLite and on AWS.
#![warn(missing_docs)]

/// Serde for a value written as text and made by `parse(&str) -> Result<Self, String>`: it
/// serializes as the text it was made from (`as_str`) and deserializes through `parse`, so
/// a stored value is read back exactly as a sent one is checked.
macro_rules! text_value {
    ($($t:ty),* $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                <$t>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

pub mod billing;
pub mod credentials;
pub mod domain;
pub mod error;
pub mod expr;
pub mod id;
pub mod ingest_queue;
pub mod limits;
pub mod models;
pub mod money;
pub mod net;
pub mod page;
pub mod pipeline;
pub mod ports;
pub mod services;
pub mod throttle;
pub mod webhook;

pub use error::{CoreError, FieldError};
pub use id::*;
pub use page::{Page, PageRequest};
pub use services::{Services, Settings};

/// A point in time, always UTC.
pub type Timestamp = time::OffsetDateTime;

/// `t` in RFC 3339, as the API writes times (empty only for a year RFC 3339 cannot hold).
pub fn rfc3339(t: Timestamp) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
