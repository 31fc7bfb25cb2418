//! The `wharf` package: configuration, the composition root and the CLI's commands.
//! `main.rs` is a thin shell over this library so tests can start the real app in-process.

pub mod app;
pub mod aws;
pub mod config;
pub mod demo;
pub mod local;
pub mod serve;

pub use app::Server;
pub use config::Config;
