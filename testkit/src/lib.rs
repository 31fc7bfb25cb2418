//! What Wharf's test binaries share. Tests of the aws shape run against one real
//! `moto_server` per test binary ([`moto::shared`]), each test on resources of its own
//! ([`moto::fresh_name`]), so they never see each other's data. Tests of collection run
//! against a strict Stripe stand-in of their own ([`stripe::StripeStandIn`]).
#![allow(clippy::expect_used)]

pub mod moto;
pub mod stripe;
