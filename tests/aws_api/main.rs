//! The black-box tests of `tests/api`, unchanged, on the aws shape: each app is
//! `wharf serve --backend aws` in-process (DynamoDB, SQS, Cognito and S3 on a real moto
//! server; the process stands in for Lambda's event sources).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

const BACKEND: helpers::Backend = helpers::Backend::Aws;

#[path = "../api/backfill.rs"]
mod backfill;
#[path = "../api/billing.rs"]
mod billing;
#[path = "../api/catalog.rs"]
mod catalog;
#[path = "../api/collection.rs"]
mod collection;
#[path = "../api/entitlements.rs"]
mod entitlements;
#[path = "../api/feeds.rs"]
mod feeds;
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/identity.rs"]
mod identity;
#[path = "../api/invitations.rs"]
mod invitations;
#[path = "../api/isolation.rs"]
mod isolation;
#[path = "../api/lifecycle.rs"]
mod lifecycle;
#[path = "../api/limits.rs"]
mod limits;
#[path = "../api/models.rs"]
mod models;
#[path = "../api/ops.rs"]
mod ops;
#[path = "../api/pipeline.rs"]
mod pipeline;
#[path = "../api/prices.rs"]
mod prices;
#[path = "../api/receiver.rs"]
mod receiver;
#[path = "../api/remote_models.rs"]
mod remote_models;
#[path = "../api/sources.rs"]
mod sources;
#[path = "../api/subscriptions.rs"]
mod subscriptions;
// `lanes.rs` stays with the local shape: it is about the local processor's per-tenant lanes
// (the stream handler's tenants side by side are in `tests/aws_handlers.rs`).
// `tokens.rs` stays with the local shape: it forges tokens with the local issuer's key
// from the data dir. The aws shape's token checks (signature, algorithm, issuer, audience,
// expiry and use of Cognito's tokens, tampered ones refused) are in
// `adapters/aws/tests/cognito.rs`, against moto's real pool.
