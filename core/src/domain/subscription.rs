//! Subscriptions: a subscriber, a feed, a plan, and the channel data goes out on.

use super::source::shape_message;
use super::{Email, Shape, WebhookUrl};
use crate::error::Problems;
use crate::expr::Expr;
use crate::{FeedId, SubscriptionId, Timestamp, UserId, VendorId};
use serde::{Deserialize, Serialize};

/// Where a subscription's records go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "ChannelText"
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Channel {
    /// Signed HTTP POSTs (Standard Webhooks).
    Webhook {
        /// http or https URL of a public host.
        url: WebhookUrl,
    },
    /// The subscriber fetches `GET /v1/subscriptions/{id}/records`.
    Pull {},
    /// Live records over `GET /v1/subscriptions/{id}/live`.
    Websocket {},
    /// One email per record or batch.
    Email {
        /// Recipient.
        address: Email,
    },
    /// An SQS queue of the subscriber's (aws shape).
    Sqs {
        /// The queue's ARN.
        queue_arn: String,
    },
    /// A mobile push endpoint (aws shape).
    MobilePush {
        /// The SNS platform endpoint ARN.
        endpoint_arn: String,
    },
}

/// A channel as sent, its addresses not parsed yet.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ChannelText {
    Webhook { url: String },
    Pull {},
    Websocket {},
    Email { address: String },
    Sqs { queue_arn: String },
    MobilePush { endpoint_arn: String },
}

impl TryFrom<ChannelText> for Channel {
    type Error = String;

    fn try_from(text: ChannelText) -> Result<Channel, String> {
        fn at(field: &'static str) -> impl Fn(String) -> String {
            move |message| crate::error::field_message(field, &message)
        }
        Ok(match text {
            ChannelText::Webhook { url } => Channel::Webhook {
                url: WebhookUrl::parse(&url).map_err(at("url"))?,
            },
            ChannelText::Email { address } => Channel::Email {
                address: Email::parse(&address).map_err(at("address"))?,
            },
            ChannelText::Pull {} => Channel::Pull {},
            ChannelText::Websocket {} => Channel::Websocket {},
            ChannelText::Sqs { queue_arn } => Channel::Sqs { queue_arn },
            ChannelText::MobilePush { endpoint_arn } => Channel::MobilePush { endpoint_arn },
        })
    }
}

impl Channel {
    /// Shapes that can serve this channel.
    pub fn shapes(&self) -> &'static [Shape] {
        match self {
            // Subscriptions of the feed's SNS topic: only the aws shape has one.
            Channel::Sqs { .. } | Channel::MobilePush { .. } => &[Shape::Aws],
            _ => &[Shape::Local, Shape::Aws],
        }
    }

    /// The channel's type name.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Pull {} => "pull",
            Channel::Websocket {} => "websocket",
            Channel::Email { .. } => "email",
            Channel::Sqs { .. } => "sqs",
            Channel::MobilePush { .. } => "mobile_push",
        }
    }

    /// Checks what the running shape and the ARNs need (addresses are parsed already; whether
    /// a webhook host may be reached is the service's check, which resolves it).
    pub fn validate(&self, shape: Shape, p: &mut Problems) {
        if !self.shapes().contains(&shape) {
            p.add(
                "channel.type",
                format!("`{}` {}", self.kind(), shape_message(self.shapes())),
            );
            return;
        }
        match self {
            Channel::Sqs { queue_arn } => {
                if !arn_of(queue_arn, "sqs") {
                    p.add(
                        "channel.queue_arn",
                        "must be an SQS queue ARN (arn:aws:sqs:region:account:name)",
                    );
                }
            }
            Channel::MobilePush { endpoint_arn } => {
                if !arn_of(endpoint_arn, "sns") {
                    p.add(
                        "channel.endpoint_arn",
                        "must be an SNS endpoint ARN (arn:aws:sns:…)",
                    );
                }
            }
            Channel::Webhook { .. }
            | Channel::Email { .. }
            | Channel::Pull {}
            | Channel::Websocket {} => {}
        }
    }
}

fn arn_of(arn: &str, service: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6 && parts[0] == "arn" && parts[2] == service && parts[5].len() > 1
}

/// Who carries a channel's records to the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Wharf's sender signs and sends them, retries and meters (webhooks, and email where
    /// no topic sends it).
    Sender,
    /// The feed's topic delivers them (`sqs`, `mobile_push`, and email in the aws shape).
    Topic,
    /// A live socket: the process's own, or a gateway's connections.
    Socket,
    /// The subscriber fetches them.
    Pull,
}

/// How records are grouped into one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Batch {
    /// At most this many records per delivery (1 to 1000).
    pub max_records: u32,
    /// Send a partial batch after this many milliseconds (0 to 60000).
    pub max_wait_ms: u32,
}

impl Batch {
    /// Checks the bounds.
    pub fn validate(&self, p: &mut Problems) {
        if !(1..=1000).contains(&self.max_records) {
            p.add("batch.max_records", "must be between 1 and 1000");
        }
        if self.max_wait_ms > 60_000 {
            p.add("batch.max_wait_ms", "must be between 0 and 60000");
        }
    }
}

/// A subscription's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SubscriptionStatus {
    /// Receiving records.
    Active,
    /// Receiving nothing until resumed.
    Paused,
    /// Ended for good.
    Cancelled,
}

/// One status change, kept for proration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusChange {
    /// The new status.
    pub status: SubscriptionStatus,
    /// When it took effect.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}

/// A subscriber's subscription to a feed. It lives in the feed's tenant partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Subscription {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// The vendor selling the feed.
    pub tenant_id: VendorId,
    /// The subscribing user.
    pub subscriber_id: UserId,
    /// The feed.
    pub feed_id: FeedId,
    /// The chosen plan of the feed.
    pub plan_id: String,
    /// The plan's version it was bought at: the prices it is rated at until a move.
    #[serde(default = "super::first_plan_version")]
    pub plan_version: u32,
    /// Moves to later versions of its plan that the vendor scheduled, oldest first; each
    /// takes effect at the start of a month.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan_moves: Vec<PlanMove>,
    /// Where records go.
    pub channel: Channel,
    /// Optional CEL over `record`; only matching records are delivered.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub filter: Option<Expr>,
    /// Optional batching.
    pub batch: Option<Batch>,
    /// Current state.
    pub status: SubscriptionStatus,
    /// Every status change, oldest first (the first is the creation).
    pub history: Vec<StatusChange>,
    /// Why deliveries stopped, when Wharf paused the subscription itself (endpoint gone with
    /// 410, or failing for days); cleared on resume.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// The unpaid invoice dunning paused the subscription for: paying it resumes the
    /// subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub paused_for_invoice: Option<crate::InvoiceId>,
    /// When the subscription was replayed within the last hour (what `replays_per_hour`
    /// counts).
    #[serde(default, with = "timestamps")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub recent_replays: Vec<Timestamp>,
    /// Since when every delivery attempt has failed, if the endpoint is failing now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub failing_since: Option<Timestamp>,
    /// When the owner of an email channel's address confirmed it through the link mailed to
    /// it; nothing is mailed before (in the aws shape the feed's topic asks for the
    /// confirmation itself: see `native`).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub email_confirmed_at: Option<Timestamp>,
    /// Where a native channel (`sqs`, `email` and `mobile_push` in the aws shape) is
    /// subscribed to the feed's topic, while the subscription is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeLink>,
    /// The history granted when it was created (`backfill` in the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<super::BackfillGrant>,
    /// Grows by one on every change.
    pub revision: u64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// A native channel's subscription of its feed's topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NativeLink {
    /// The topic subscription's id (an SNS subscription ARN).
    pub id: String,
    /// The recipient has not confirmed yet (email); nothing is delivered until it does.
    pub pending_confirmation: bool,
    /// Wharf evaluates the filter and tags the records that match, because the topic
    /// cannot express it; `false` when the topic applies the filter itself (or there is none).
    pub filtered_by_wharf: bool,
}

/// A webhook signing secret, sealed at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSecret {
    /// The secret, encrypted by the `SecretBox` port.
    pub sealed: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// When a rotated-out secret stops being used; `None` for the current one.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<Timestamp>,
}

/// The body of `POST /v1/subscriptions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "feed_id": "feed_0193a5e4c2a87c3b9d41e2f6a8b0c1d2", "plan_id": "pro",
    "channel": {"type": "webhook", "url": "https://hooks.example.com/wharf"},
    "filter": "record.usd > 1000.0", "batch": {"max_records": 100, "max_wait_ms": 500}
})))]
pub struct NewSubscription {
    /// A published feed.
    pub feed_id: FeedId,
    /// One of the feed's plans.
    pub plan_id: String,
    /// Where records go.
    pub channel: Channel,
    /// Optional CEL over `record`.
    pub filter: Option<String>,
    /// Optional batching.
    pub batch: Option<Batch>,
    /// History to deliver first, counted as backfill (its own invoice line).
    pub backfill: Option<super::Backfill>,
}

/// The body of `PATCH /v1/subscriptions/{id}`; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionPatch {
    /// `paused` to pause, `active` to resume (cancel with DELETE).
    pub status: Option<SubscriptionStatus>,
    /// A new channel (a new webhook gets a new signing secret).
    pub channel: Option<Channel>,
    /// A new filter; an empty string removes it.
    pub filter: Option<String>,
    /// New batching.
    pub batch: Option<Batch>,
}

/// A scheduled move of a subscription to another version of its plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanMove {
    /// The version moved to.
    pub version: u32,
    /// The start of the month it takes effect in.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: Timestamp,
}

impl Subscription {
    /// The version of its plan the subscription is rated at from `at` on.
    pub fn plan_version_at(&self, at: Timestamp) -> u32 {
        self.plan_moves
            .iter()
            .rev()
            .find(|m| m.from <= at)
            .map_or(self.plan_version, |m| m.version)
    }

    /// Every version of its plan the subscription was or will be rated at.
    pub fn plan_versions(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.plan_version).chain(self.plan_moves.iter().map(|m| m.version))
    }

    /// Whether the subscription was active at `at`, to the microsecond (as stores keep
    /// times): it is entitled to the records its feed output while it was active, and to no
    /// others (none from before it started, none from while it was paused).
    pub fn active_at(&self, at: Timestamp) -> bool {
        let micros = |t: Timestamp| t.unix_timestamp_nanos() / 1000;
        self.history
            .iter()
            .take_while(|change| micros(change.at) <= micros(at))
            .last()
            .is_some_and(|change| change.status == SubscriptionStatus::Active)
    }

    /// Whether the record output at `position` is backfill the subscription was granted.
    pub fn is_backfill(&self, position: u64) -> bool {
        self.backfill.is_some_and(|g| g.covers(position))
    }

    /// Whether the subscription may receive the record output at `position` and `at`: one
    /// output while it was active, or granted backfill.
    pub fn entitled(&self, position: u64, at: Timestamp) -> bool {
        self.active_at(at) || self.is_backfill(position)
    }

    /// How the records at `positions`, acknowledged together, are counted.
    pub fn counted(&self, positions: impl IntoIterator<Item = u64>) -> super::Counted {
        let mut counted = super::Counted::default();
        for position in positions {
            if self.is_backfill(position) {
                counted.backfill += 1;
            } else {
                counted.usage += 1;
            }
        }
        counted
    }
}

/// A subscription as the selling vendor reads it: who subscribed to what, on which plan, and
/// how records are delivered, without the subscriber's addresses (a webhook URL is often a
/// capability; an email address is personal) or filter.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VendorSubscription {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// The vendor selling the feed.
    pub tenant_id: VendorId,
    /// The subscribing user.
    pub subscriber_id: UserId,
    /// The feed.
    pub feed_id: FeedId,
    /// The chosen plan of the feed.
    pub plan_id: String,
    /// The plan's version: the prices the subscription is rated at.
    pub plan_version: u32,
    /// How records are delivered.
    pub channel: ChannelSummary,
    /// Current state.
    pub status: SubscriptionStatus,
    /// Every status change, oldest first.
    pub history: Vec<StatusChange>,
    /// Why deliveries stopped, when Wharf paused the subscription itself.
    pub disabled_reason: Option<String>,
    /// Since when every delivery attempt has failed, if the endpoint is failing now.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub failing_since: Option<Timestamp>,
    /// Grows by one on every change.
    pub revision: u64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// A channel's kind and, for a webhook, its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelSummary {
    /// `webhook`, `pull`, `websocket`, `email`, `sqs` or `mobile_push`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The webhook's host (no scheme, path or query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl From<&Subscription> for VendorSubscription {
    fn from(sub: &Subscription) -> Self {
        let host = match &sub.channel {
            Channel::Webhook { url } => url.url().host_str().map(str::to_owned),
            _ => None,
        };
        VendorSubscription {
            id: sub.id.clone(),
            tenant_id: sub.tenant_id.clone(),
            subscriber_id: sub.subscriber_id.clone(),
            feed_id: sub.feed_id.clone(),
            plan_id: sub.plan_id.clone(),
            plan_version: sub.plan_version,
            channel: ChannelSummary {
                kind: sub.channel.kind().to_owned(),
                host,
            },
            status: sub.status,
            history: sub.history.clone(),
            disabled_reason: sub.disabled_reason.clone(),
            failing_since: sub.failing_since,
            revision: sub.revision,
            created_at: sub.created_at,
            updated_at: sub.updated_at,
        }
    }
}

/// A subscription as its reader may see it: whole to its subscriber, summarized to the
/// selling vendor.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per answer, serialized at once: boxing buys nothing"
)]
pub enum SubscriptionView {
    /// The subscriber's own subscription.
    Subscriber(Subscription),
    /// The vendor's summary.
    Vendor(VendorSubscription),
}

/// A subscription with the signing secret, shown once at creation and rotation.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionWithSecret {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// `whsec_…`, webhook channels only; store it now, it is not shown again. Absent when
    /// the answer is a replay of the same `Idempotency-Key` (see `withheld`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Fields this answer does not repeat: a replay of the same `Idempotency-Key` answers
    /// `["signing_secret"]` here instead of the secret, which is shown once and never kept.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub withheld: Vec<String>,
}

impl SubscriptionWithSecret {
    /// This answer as a replay shows it: without the signing secret.
    pub fn withheld(&self) -> SubscriptionWithSecret {
        SubscriptionWithSecret {
            subscription: self.subscription.clone(),
            signing_secret: None,
            withheld: if self.signing_secret.is_some() {
                vec!["signing_secret".into()]
            } else {
                Vec::new()
            },
        }
    }
}

/// The answer of `GET /v1/email-confirmations/{token}`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfirmedEmail {
    /// The subscription the address receives records of.
    pub subscription_id: SubscriptionId,
    /// The confirmed address.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub address: Email,
    /// When it was confirmed (the first time the link was opened).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub confirmed_at: Timestamp,
}

/// The answer of `POST /v1/subscriptions/{id}/rotate-secret`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedSecret {
    /// The new `whsec_…` secret; store it now, it is not shown again.
    pub signing_secret: String,
    /// Until then deliveries carry signatures with both the old and the new secret.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub previous_secret_expires_at: Timestamp,
}

/// A list of instants, each written as RFC 3339.
mod timestamps {
    use crate::Timestamp;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct At(#[serde(with = "time::serde::rfc3339")] Timestamp);

    pub fn serialize<S: Serializer>(instants: &[Timestamp], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(instants.iter().map(|t| At(*t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Timestamp>, D::Error> {
        Ok(Vec::<At>::deserialize(d)?
            .into_iter()
            .map(|a| a.0)
            .collect())
    }
}
