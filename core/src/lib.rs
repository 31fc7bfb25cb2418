//! Wharf's domain: typed ids, entities, validation rules, the ports adapters implement, and
//! the services that hold the business rules. Nothing here performs I/O; every effect goes
//! through a port (`ports`), so the same services run on SQLite and on AWS.
#![warn(missing_docs)]

pub mod billing;
pub mod credentials;
pub mod domain;
pub mod error;
pub mod expr;
pub mod id;
pub mod ingest_queue;
pub mod money;
pub mod net;
pub mod page;
pub mod pipeline;
pub mod ports;
pub mod services;
pub mod webhook;

pub use error::{CoreError, FieldError};
pub use id::*;
pub use page::{Page, PageRequest};
pub use services::{Services, Settings};

/// A point in time, always UTC.
pub type Timestamp = time::OffsetDateTime;
