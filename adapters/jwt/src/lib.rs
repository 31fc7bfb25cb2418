//! Bearer tokens for Wharf: the one JWT verifier both deployment shapes use (the local
//! issuer's Ed25519 keys, an AWS Cognito user pool's RS256 JWKS) and the local issuer.
//!
//! The verifier turns a token into a [`wharf_core::domain::identity::Principal`] or an
//! `Unauthenticated` error; it never reads the system clock, so Wharf's injectable clock
//! decides expiry in tests and in production alike.

mod issuer;
pub mod keyfile;
mod verifier;

pub use issuer::LocalIssuer;
pub use jsonwebtoken::Algorithm;
pub use verifier::{Audience, JwtVerifier, VerifierConfig};
