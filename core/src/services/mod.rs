//! Services: the business rules (who may do what, validation, state transitions), written
//! once over the ports and shared by the API and the workers of both shapes.

mod accounts;
mod backfill;
mod billing;
mod catalog;
mod channels;
mod collection;
mod invitations;
mod lifecycle;
mod models;
mod months;
mod payouts;
mod plan_moves;
mod quotas;
mod records;
mod subscriptions;
mod summary;

pub use accounts::*;
pub use channels::*;
pub use collection::{Collected, StripeEventOutcome};
pub use invitations::{Invitation, NewInvitation, VerifiedEmail};
pub use models::{MAX_MODEL_BYTES, MAX_UPLOAD_BYTES, ModelSummary, ModelUpload};
pub use payouts::PayoutAccountLink;
pub use plan_moves::PlanMoveScheduled;
pub use records::*;
pub use summary::{BillingSummary, VendorSummary};

use crate::domain::Shape;
use crate::ports::{Clock, Identity, Mailer, Notifier, OutboundHttp, Resolver, SecretBox, Store};
use std::sync::Arc;
use std::time::Duration;

/// Settings the business rules depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The running shape; decides which channels and source kinds are available.
    pub shape: Shape,
    /// New vendors start `pending` until a platform admin approves them.
    pub require_vendor_approval: bool,
    /// Where webhooks, polls and mail may connect.
    pub egress: crate::net::Egress,
    /// The API's address as its users reach it, for links in mail (`http://127.0.0.1:8080`).
    pub public_url: String,
    /// How long a rotated-out webhook secret keeps signing deliveries.
    pub secret_overlap: Duration,
    /// How long the delivery log and feed error lists keep an entry.
    pub log_retention: Duration,
    /// How long after a month ends the schedule closes it (`billing_close_delay_hours`).
    pub billing_close_delay: Duration,
    /// How long an invoice may stay unpaid after a failed payment before dunning pauses the
    /// subscriber's subscriptions to its vendor (`dunning_days`).
    pub dunning_period: Duration,
    /// The platform's share of each vendor's gross, in percent.
    pub platform_fee_percent: rust_decimal::Decimal,
    /// Per-vendor exceptions to `platform_fee_percent`.
    pub vendor_fee_percent: std::collections::HashMap<crate::VendorId, rust_decimal::Decimal>,
    /// Evaluation budgets and quotas.
    pub limits: crate::limits::Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            shape: Shape::Local,
            require_vendor_approval: false,
            egress: crate::net::Egress::default(),
            public_url: "http://127.0.0.1:8080".into(),
            secret_overlap: Duration::from_secs(24 * 3600),
            log_retention: Duration::from_secs(30 * 24 * 3600),
            billing_close_delay: Duration::from_secs(24 * 3600),
            dunning_period: Duration::from_secs(7 * 24 * 3600),
            platform_fee_percent: rust_decimal::Decimal::from(20),
            vendor_fee_percent: std::collections::HashMap::new(),
            limits: crate::limits::Limits::default(),
        }
    }
}

/// Everything a request or a worker needs, built once at start.
#[derive(Clone)]
pub struct Services {
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Accounts and tokens.
    pub identity: Arc<dyn Identity>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// DNS, for the outbound URL guard.
    pub resolver: Arc<dyn Resolver>,
    /// Sealing of recoverable secrets.
    pub secrets: Arc<dyn SecretBox>,
    /// Wakes the local workers.
    pub notifier: Arc<dyn Notifier>,
    /// Outbound HTTP (webhooks, polled sources), behind the address guard.
    pub http: Arc<dyn OutboundHttp>,
    /// Sends email.
    pub mailer: Arc<dyn Mailer>,
    /// Runs tenants' expressions off the request threads, a bounded share per lane.
    pub compute: Arc<dyn crate::ports::Compute>,
    /// Counts logins, sign-ups and refreshes per address and account.
    pub throttle: Arc<crate::throttle::Throttle>,
    /// The payment processor, when one is configured.
    pub payments: Option<Arc<dyn crate::ports::Payments>>,
    /// The aws shape's ingest queue; `None` stores ingested records at once (local shape).
    pub ingest_queue: Option<Arc<dyn crate::ports::IngestQueue>>,
    /// The queues of `sqs` sources; `None` where no shape serves them (local).
    pub source_queues: Option<Arc<dyn crate::ports::SourceQueues>>,
    /// The topics of published feeds; `None` where Wharf delivers every channel itself (local).
    pub fanout: Option<Arc<dyn crate::ports::Fanout>>,
    /// A gateway's WebSocket connections; `None` where the process serves sockets itself.
    pub sockets: Option<Arc<dyn crate::ports::Sockets>>,
    /// The model engine, the models' files and the models loaded.
    pub models: Arc<crate::models::Models>,
    /// Figures `/metrics` shows besides the process's own.
    pub metrics: Vec<Arc<dyn crate::ports::Metrics>>,
    /// Business settings.
    pub settings: Settings,
}
