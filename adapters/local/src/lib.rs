//! Adapters for the local shape: one process, one data directory. The SQLite database
//! (`db`) backs the store port (`store`) and the other local adapters.

pub mod db;
pub mod store;

pub use db::{Db, Durability};
pub use store::SqliteStore;
pub mod identity;
pub mod resolve;
pub mod seal;

pub use identity::LocalIdentity;
pub use resolve::SystemResolver;
pub use seal::FileSecretBox;
