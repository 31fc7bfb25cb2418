//! Adapters for the local shape: one process, one data directory. The SQLite database
//! (`db`) backs the store port (`store`, with records in `records`, the change feed in
//! `change_log` and delivery state and usage in `deliveries`) and the other local adapters.

mod billing;
mod change_log;
mod columns;
pub mod db;
mod deliveries;
#[cfg(test)]
mod plans;
mod records;
pub mod store;

pub use db::{Db, Durability};
pub use store::SqliteStore;
pub mod identity;
pub mod mail;
pub mod objects;
pub mod resolve;
pub mod seal;
pub mod webhook;

pub use identity::LocalIdentity;
pub use mail::{OutboxMailer, SmtpMailer, SmtpSecurity};
pub use objects::FsObjects;
pub use resolve::SystemResolver;
pub use seal::FileSecretBox;
pub use webhook::HttpWebhookSender;

/// Creates `dir` (and its missing parents) readable by its owner only: what Wharf keeps on
/// disk (records, mail, models, keys) is no one else's to read. An existing directory is left
/// as its owner made it.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
