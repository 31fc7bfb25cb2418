//! Black-box tests: the real app on 127.0.0.1:0 with a fresh data dir, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod billing;
mod catalog;
mod feeds;
mod helpers;
mod identity;
mod isolation;
mod ops;
mod pipeline;
mod receiver;
mod sources;
mod subscriptions;
mod tokens;
