//! Ports: the capabilities services need from the outside world, as small traits. Every
//! tenant-owned read or write takes the tenant first, and an object of another tenant reads
//! as `NotFound`. Each port has one contract test suite (`wharf-contract`) that every
//! adapter runs.

mod compute;
mod fanout;
mod models;
mod outside;
mod records;
mod store;

pub use compute::*;
pub use fanout::*;
pub use models::*;
pub use outside::*;
pub use records::*;
pub use store::*;

use crate::CoreError;

/// Shorthand for port results.
pub type Result<T> = std::result::Result<T, CoreError>;
