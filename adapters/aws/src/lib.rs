//! Wharf's ports on AWS's own services. See `README.md` in this crate for the table's key
//! design.

pub mod bootstrap;
pub mod calls;
pub mod clients;
pub mod cognito;
pub mod emulate;
pub mod fanout;
pub mod ingest;
pub mod lambda;
pub mod s3;
pub mod sockets;
pub mod store;
pub mod table;

pub use calls::CallCounter;
pub use clients::{AwsSettings, Clients};

// The SDKs, for tests and tools that speak to the same services (no other crate depends on them).
pub use aws_sdk_dynamodb;
pub use aws_sdk_dynamodbstreams;
pub use aws_sdk_sns;
pub use aws_sdk_sqs;
pub use store::DynamoStore;

/// A failed AWS call (or a fetch from an AWS endpoint) as `Unavailable`, naming what was being
/// done and carrying the error's whole chain: the SDK's own `Display` shows only the top.
pub(crate) fn aws_error(what: &str, e: impl std::error::Error) -> wharf_core::CoreError {
    wharf_core::CoreError::unavailable(format!(
        "{what}: {}",
        aws_smithy_types::error::display::DisplayErrorContext(e)
    ))
}
