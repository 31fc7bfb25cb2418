//! Ports to the world outside the store: identity, payments, objects, time, names, sealing,
//! outbound HTTP and mail, and the figures `/metrics` shows.

use super::Result;
use crate::domain::*;
use crate::{CoreError, FeedId, Timestamp, UserId, VendorId};
use async_trait::async_trait;
use std::net::IpAddr;

/// The payment processor invoices are collected through (Stripe). Every call carries an
/// idempotency key chosen by the caller: the processor answers a repeated key with the first
/// call's result, so a push retried after a crash or a timeout never charges twice.
#[async_trait]
pub trait Payments: Send + Sync {
    /// Creates a customer for `subscriber`; returns its id.
    async fn create_customer(
        &self,
        key: &str,
        subscriber: &UserId,
        email: &Email,
    ) -> Result<String>;
    /// Creates a draft invoice for `customer` tagged with Wharf's invoice id, collected by
    /// `method`; returns its id.
    async fn create_invoice(
        &self,
        key: &str,
        customer: &str,
        invoice: &Invoice,
        method: CollectionMethod,
    ) -> Result<String>;
    /// Adds one of Wharf's invoice lines to a draft invoice of `customer`.
    async fn add_invoice_item(
        &self,
        key: &str,
        customer: &str,
        processor_invoice: &str,
        item: &InvoiceItem,
    ) -> Result<()>;
    /// The processor's view of an invoice it has.
    async fn fetch_invoice(&self, processor_invoice: &str) -> Result<RemoteInvoice>;
    /// The numbers of Wharf's lines already added to a processor invoice.
    async fn invoice_lines(&self, processor_invoice: &str) -> Result<Vec<usize>>;
    /// Finalizes a draft invoice so it can be paid; with `auto_advance` the processor goes on
    /// to charge it.
    async fn finalize_invoice(
        &self,
        key: &str,
        processor_invoice: &str,
        auto_advance: bool,
    ) -> Result<FinalizedInvoice>;
    /// Sends a finalized invoice to its customer to be paid.
    async fn send_invoice(&self, key: &str, processor_invoice: &str) -> Result<()>;
    /// Makes a page where the subscriber saves a payment method; returns its URL.
    async fn setup_page(&self, key: &str, setup: &PaymentSetup) -> Result<String>;
    /// Creates a connected account (Express) for `vendor` to receive payouts; returns its id.
    async fn create_connected_account(&self, key: &str, vendor: &VendorId) -> Result<String>;
    /// Makes a page where the vendor completes its account's onboarding; returns its URL.
    async fn onboarding_link(
        &self,
        key: &str,
        account: &str,
        refresh_url: &str,
        return_url: &str,
    ) -> Result<String>;
    /// Transfers money from the platform's balance to a connected account; returns its id.
    async fn transfer(&self, key: &str, transfer: &TransferRequest) -> Result<String>;
    /// Makes `payment_method` the one `customer`'s invoices are charged to.
    async fn set_default_payment_method(
        &self,
        key: &str,
        customer: &str,
        payment_method: &str,
    ) -> Result<()>;
    /// The event a signed callback of the processor carries, once its `signature` header
    /// checks out for `body` at `now`; `Unauthenticated` when it is missing, wrong or stale,
    /// `Validation` when the body is not an event.
    fn parse_event(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: Timestamp,
    ) -> Result<PaymentEvent>;
}

/// Figures a running process adds to `/metrics`, in Prometheus' text format.
pub trait Metrics: Send + Sync {
    /// Lines of `# HELP`, `# TYPE` and samples, each ending in a newline.
    fn render(&self) -> String;
}

/// Blobs by key: ONNX models, exports. Keys are `/`-separated paths checked by
/// [`check_object_key`]; a tenant's objects live under its id. Files in the data dir, or S3.
/// Wharf never stores `a/b` beside `a` (a key that is also the path of others): files cannot
/// hold both, so the local shape refuses it as a `Conflict`, while S3 would accept it.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Stores `body` under `key`, replacing what was there; readers see the old or the new
    /// object, never a part.
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()>;
    /// The object under `key`; `NotFound` if there is none.
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Removes the object under `key`; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// The keys under `prefix` (a key prefix ending in `/`, or empty for all), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// A URL that takes a PUT of the object under `key` without other credentials, for
    /// `valid`; `None` when the store has none (Wharf then takes the upload itself).
    async fn presign_put(&self, key: &str, valid: std::time::Duration) -> Result<Option<String>> {
        let _ = (key, valid);
        Ok(None)
    }
}

/// Longest object key, in bytes (S3 allows 1024).
pub const MAX_OBJECT_KEY: usize = 512;

/// Checks an object key: 1 to 512 bytes of segments joined by `/`, each made of ASCII
/// letters, digits, `.`, `_` and `-` and neither `.` nor `..`. This is what keeps a key from
/// naming a file outside the object directory of the local shape.
pub fn check_object_key(key: &str) -> Result<()> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if key.is_empty() || key.len() > MAX_OBJECT_KEY || !key.split('/').all(segment_ok) {
        return Err(CoreError::invalid(
            "key",
            "must be 1 to 512 bytes of `/`-separated segments of letters, digits, `.`, `_` and `-`",
        ));
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a valid key followed by `/`.
pub fn check_object_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(key) => check_object_key(key),
        None => Err(CoreError::invalid(
            "prefix",
            "must be empty or end with `/`",
        )),
    }
}

/// User accounts, credentials and tokens: the local issuer, or Cognito.
#[async_trait]
pub trait Identity: Send + Sync {
    /// Creates a user; `Conflict` if the email is taken.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    /// Removes a user (undoes a failed sign-up).
    async fn delete_user(&self, id: &UserId) -> Result<()>;
    /// The user who logs in with `email`, if there is one.
    async fn find_user(&self, email: &Email) -> Result<Option<UserId>>;
    /// Replaces a user's password (already checked against the policy) and signs the user
    /// out everywhere: every refresh token issued before stops working.
    async fn set_password(&self, id: &UserId, password: &str) -> Result<()>;
    /// Exchanges email and password for tokens; `Unauthenticated` on any mismatch.
    async fn login(&self, email: &Email, password: &str) -> Result<TokenPair>;
    /// Exchanges a refresh token for new tokens; `Unauthenticated` if unknown, used or expired.
    async fn refresh(&self, refresh_token: &str) -> Result<TokenPair>;
    /// Verifies an access token fully (signature by `kid`, algorithm, issuer, audience, expiry, use).
    async fn verify(&self, access_token: &str) -> Result<Principal>;
    /// The public keys tokens are signed with, when this process is the issuer.
    fn jwks(&self) -> Option<serde_json::Value>;
}

/// The current time.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> Timestamp;
}

/// Resolves host names, for the outbound URL guard.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// All addresses of `host`; a name that does not resolve is `Unavailable`, saying why.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>>;
}

/// Seals secrets that must be recoverable (webhook signing secrets) for storage.
pub trait SecretBox: Send + Sync {
    /// Encrypts and authenticates `plaintext`.
    fn seal(&self, plaintext: &str) -> Result<String>;
    /// Decrypts what `seal` produced.
    fn open(&self, sealed: &str) -> Result<String>;
    /// A keyed digest of `data`, in hex: equal for equal data under one key, and of no use
    /// without the key for guessing what `data` was (it may hold a password).
    fn digest(&self, data: &[u8]) -> String;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        time::OffsetDateTime::now_utc()
    }
}

/// Wakes the workers and live readers of this process when there is new work (where event
/// sources deliver the work, as on Lambda, nothing is waiting to be woken).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// New raw records were stored.
    fn raw_appended(&self);
    /// New output records were stored, or a subscription changed.
    fn outputs_appended(&self);
    /// New output records of `feed` were stored.
    fn feed_appended(&self, feed: &FeedId);
    /// Completes when `feed` gets new output records, or after `timeout`.
    async fn feed_changed(&self, feed: &FeedId, timeout: std::time::Duration);
}

/// Outbound HTTP (webhook POSTs, polled sources), refusing addresses the guard does not allow.
#[async_trait]
pub trait OutboundHttp: Send + Sync {
    /// POSTs `body` with `headers` to `url` within `timeout`.
    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> SendOutcome;
    /// GETs `url` within `timeout`, reading at most `max_bytes` of the body: (status, body).
    async fn get(
        &self,
        url: &str,
        timeout: std::time::Duration,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>)>;
    /// POSTs `body` with `headers` to `url` within `timeout`, reading at most `max_bytes`
    /// of the answer: (status, body). (Remote models.)
    async fn exchange(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: std::time::Duration,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>)>;
}

/// Sends email: the email channel and notices to subscribers.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends a plain-text message; `Ok` once the mail server (or the outbox) accepted it.
    async fn send(&self, to: &Email, subject: &str, body: &str) -> Result<()>;
}
