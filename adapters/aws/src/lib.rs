//! Wharf's ports on AWS's own services. See `README.md` in this crate for the table's key
//! design.

pub mod bootstrap;
pub mod calls;
pub mod clients;
pub mod cognito;
pub mod ingest;
pub mod metering;
pub mod s3;
pub mod table;

pub use calls::CallCounter;
pub use clients::{AwsSettings, Clients};
