//! One module per resource, each with its own `router()`.

pub mod api_keys;
pub mod billing;
pub mod catalog;
pub mod feeds;
pub mod identity;
pub mod invitations;
pub mod live;
pub mod models;
pub mod ops;
pub mod records;
pub mod reference;
pub mod sources;
pub mod subscriptions;
