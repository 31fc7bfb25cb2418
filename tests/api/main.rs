//! Black-box tests: the real app on 127.0.0.1:0 with a fresh data dir, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

/// The shape every test here runs on; `tests/aws_api` runs the same tests on the aws shape.
const BACKEND: helpers::Backend = helpers::Backend::Local;

mod at_rest;
mod backfill;
mod billing;
mod catalog;
mod collection;
mod entitlements;
mod feeds;
mod helpers;
mod identity;
mod invitations;
mod isolation;
mod lanes;
mod lifecycle;
mod limits;
mod models;
mod ops;
mod pipeline;
mod prices;
mod receiver;
mod remote_models;
mod sources;
mod standin;
mod subscriptions;
mod tokens;
