//! Prefixed, time-sortable identifiers (`ven_…`, `feed_…`): a UUIDv7 in lowercase hex after
//! the prefix, so ids sort by creation time and a wrong kind of id never parses.

use std::fmt;

/// An identifier did not have the expected prefix and shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a valid {expected} id")]
pub struct IdError {
    /// The kind of id that was expected, e.g. `feed`.
    pub expected: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix of this kind of id, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new id, sortable by creation time.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self::from_uuid(uuid::Uuid::now_v7())
            }

            /// The id for a given UUID (used for ids derived from other ids).
            pub fn from_uuid(u: uuid::Uuid) -> Self {
                Self(format!("{}_{}", $prefix, u.simple()))
            }

            /// Parses `s`, checking the prefix and the 32 hex digits after it.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let ok = s
                    .strip_prefix($prefix)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|hex| {
                        hex.len() == 32
                            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    });
                if ok {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError { expected: $prefix })
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The UUID inside the id.
            pub fn uuid(&self) -> uuid::Uuid {
                let hex = &self.0[$prefix.len() + 1..];
                uuid::Uuid::parse_str(hex).unwrap_or_default()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "_[0-9a-f]{32}$")))
                    .examples([serde_json::json!(concat!($prefix, "_0193a5e4c2a87c3b9d41e2f6a8b0c1d2"))])
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

prefixed_id!(
    /// A vendor, which is also the tenant that owns everything the vendor creates.
    VendorId, "ven");
prefixed_id!(
    /// A user account (vendor staff, platform staff or subscriber).
    UserId, "usr");
prefixed_id!(
    /// An upstream source of raw records.
    SourceId, "src");
prefixed_id!(
    /// A sellable feed.
    FeedId, "feed");
prefixed_id!(
    /// A subscription of a subscriber to a feed.
    SubscriptionId, "sub");
prefixed_id!(
    /// A raw or output record.
    RecordId, "rec");
prefixed_id!(
    /// One delivery of a record to a subscription.
    DeliveryId, "del");
prefixed_id!(
    /// An invoice.
    InvoiceId, "inv");
prefixed_id!(
    /// A vendor payout statement.
    PayoutId, "pay");
prefixed_id!(
    /// An ingest API key.
    ApiKeyId, "key");
prefixed_id!(
    /// One version of a registered model.
    ModelId, "mdl");

/// The tenant is the vendor: every vendor-owned object is keyed by it.
pub type TenantId = VendorId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_the_wrong_prefix() {
        let id = FeedId::new();
        assert!(id.as_str().starts_with("feed_"));
        assert_eq!(FeedId::parse(id.as_str()).map(|p| p == id).ok(), Some(true));
        assert!(SourceId::parse(id.as_str()).is_err());
        assert!(FeedId::parse("feed_XYZ").is_err());
        assert_eq!(FeedId::from_uuid(id.uuid()), id);
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = VendorId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = VendorId::new();
        assert!(a < b);
    }
}

/// A deterministic UUID (version 8) derived from `parts`, so reprocessing the same inputs
/// yields the same id: output records from (feed, pipeline version, raw record), deliveries
/// from (record, subscription).
pub fn derive(parts: &[&str]) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes)
}

/// Like [`derive`], but the first 48 bits are `at` in unix milliseconds, as in a v7 id: ids
/// derived from inputs that arrive over time sort roughly by that time. Stores index them at
/// the end of their key order instead of at random places, which keeps a batch of inserts to
/// a few index pages. `at` must itself come from the inputs (a stored timestamp), never from
/// the clock, or the id would not be reproducible.
pub fn derive_at(at: time::OffsetDateTime, parts: &[&str]) -> uuid::Uuid {
    let mut bytes = *derive(parts).as_bytes();
    let ms = (at.unix_timestamp_nanos() / 1_000_000).clamp(0, (1 << 48) - 1) as u64;
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    uuid::Uuid::new_v8(bytes)
}

#[cfg(test)]
mod derive_tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_separate_their_parts() {
        assert_eq!(
            derive(&["feed_a", "1", "rec_x"]),
            derive(&["feed_a", "1", "rec_x"])
        );
        assert_ne!(
            derive(&["feed_a", "1", "rec_x"]),
            derive(&["feed_a", "2", "rec_x"])
        );
        assert_ne!(derive(&["ab", "c"]), derive(&["a", "bc"]));
        assert_eq!(derive(&["x"]).get_version_num(), 8);
    }

    #[test]
    fn time_prefixed_ids_are_stable_and_sort_by_their_time() {
        let t = time::macros::datetime!(2026-11-26 12:00:00 UTC);
        let later = t + time::Duration::milliseconds(1);
        assert_eq!(derive_at(t, &["a"]), derive_at(t, &["a"]));
        assert_ne!(derive_at(t, &["a"]), derive_at(t, &["b"]));
        assert!(derive_at(t, &["z"]) < derive_at(later, &["a"]));
        assert_eq!(derive_at(t, &["a"]).get_version_num(), 8);
    }
}
