//! Configuration: defaults, then an optional `wharf.toml`, then `WHARF_*` environment
//! variables (`__` separates nested keys), then command-line flags. Validated once at start;
//! a bad setting stops the process with a message naming it.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use wharf_core::VendorId;
use wharf_core::money::Amount;

/// A secret that never prints.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// SQLite's durability: `normal` survives a process crash, `full` also a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode.
    Normal,
    /// `synchronous=FULL`.
    Full,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// A platform admin created on first start when none exists with that email.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapAdmin {
    /// Login email.
    pub email: String,
    /// Password (12+ characters).
    pub password: Secret,
}

/// Stripe, when invoices are to be collected through it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// The secret API key (`sk_…`).
    pub secret_key: Secret,
    /// The signing secret of the webhook endpoint (`whsec_…`).
    pub webhook_secret: Secret,
    /// The signing secret of the Connect webhook endpoint, when connected accounts' events
    /// (`account.updated`) come from one of their own.
    #[serde(default)]
    pub connect_webhook_secret: Option<Secret>,
    /// Stripe's API (a fake Stripe in tests).
    #[serde(default = "stripe_api")]
    pub api_base: String,
}

fn stripe_api() -> String {
    "https://api.stripe.com".into()
}

/// How `SmtpConfig` secures its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain (a local relay).
    None,
    /// STARTTLS.
    Starttls,
    /// TLS from the start.
    Tls,
}

/// The mail server of the email channel; without one, mail goes to `outbox/` in the data dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Connection security.
    pub tls: SmtpTls,
    /// Login, if the server wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
}

/// Where a process keeps its state and runs its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// SQLite in the data dir, workers in the process.
    #[default]
    Local,
    /// DynamoDB, SQS, Cognito and S3 (AWS or an emulator); in `wharf serve`, the process
    /// also stands in for Lambda's event sources.
    Aws,
}

/// The aws shape's resources (`WHARF_AWS__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// An endpoint for every AWS service instead of AWS's own (an emulator such as moto).
    pub endpoint_url: Option<String>,
    /// The region; from the AWS environment when unset.
    pub region: Option<String>,
    /// The DynamoDB table.
    pub table: String,
    /// Prefix of the queues' names.
    pub queue_prefix: String,
    /// The object bucket.
    pub bucket: String,
    /// The Cognito user pool's name (`wharf serve` creates or finds it by name).
    pub user_pool_name: String,
    /// The user pool's id and app client id; on Lambda they must be set (the template sets
    /// them), `wharf serve` looks them up by name otherwise.
    pub user_pool_id: Option<String>,
    /// The app client's id.
    pub client_id: Option<String>,
    /// The ingest queue's URL; on Lambda it must be set, `wharf serve` bootstraps it.
    pub ingest_queue_url: Option<String>,
    /// The webhook delivery queue's URL (fed by every feed topic); on Lambda it must be set,
    /// `wharf serve` bootstraps it.
    pub delivery_queue_url: Option<String>,
    /// The API Gateway WebSocket API's management endpoint
    /// (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`), where the publisher posts
    /// to connected sockets; unset under `wharf serve`, which serves WebSockets itself.
    pub websocket_endpoint: Option<String>,
    /// The 256-bit key sealing webhook signing secrets (URL-safe base64); on Lambda it must be
    /// set, `wharf serve` keeps one in the data dir otherwise.
    pub secret_key: Option<Secret>,
    /// An access key for an emulator; on AWS leave it unset and the SDK finds the role's.
    pub access_key_id: Option<String>,
    /// The secret of `access_key_id`.
    pub secret_access_key: Option<Secret>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            endpoint_url: None,
            region: None,
            table: "wharf".into(),
            queue_prefix: "wharf".into(),
            bucket: "wharf-objects".into(),
            user_pool_name: "wharf".into(),
            user_pool_id: None,
            client_id: None,
            ingest_queue_url: None,
            delivery_queue_url: None,
            websocket_endpoint: None,
            secret_key: None,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

/// Everything a `wharf` process is configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `local` (SQLite) or `aws` (DynamoDB, SQS, Cognito, S3).
    pub backend: Backend,
    /// The aws shape's resources, used with `backend = "aws"`.
    pub aws: AwsConfig,
    /// Where the SQLite database and keys live.
    pub data_dir: PathBuf,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// New vendors wait for a platform admin's approval.
    pub require_vendor_approval: bool,
    /// Allow webhook URLs on loopback and private networks (local testing only).
    pub allow_private_webhooks: bool,
    /// When set, outbound connections (webhooks, polls, mail) go only to addresses in these
    /// networks (`127.0.0.0/8`, `::1`, `10.0.0.0/8`…): the server cannot reach anything
    /// else, whatever a tenant or subscriber names.
    pub egress_allow: Option<Vec<String>>,
    /// The API's address as its users reach it, for links in mail; defaults to
    /// `http://{listen}`.
    pub public_url: Option<String>,
    /// SQLite durability.
    pub durability: Durability,
    /// `iss` of the tokens this process issues.
    pub issuer: String,
    /// `aud` of the tokens this process issues and accepts.
    pub audience: String,
    /// Access token lifetime in seconds.
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime in seconds.
    pub refresh_token_ttl_secs: u64,
    /// How long a rotated-out webhook secret still signs, in seconds.
    pub secret_overlap_secs: u64,
    /// Waits in seconds before the 2nd, 3rd, … webhook attempt; then the delivery is given up.
    pub webhook_retry_schedule_secs: Vec<u64>,
    /// Seconds an endpoint has to answer a webhook.
    pub webhook_timeout_secs: u64,
    /// Days an endpoint may fail before its subscription is paused.
    pub webhook_disable_after_days: u64,
    /// Days the delivery log and feed error lists keep an entry.
    pub log_retention_days: u64,
    /// The mail server; absent: mail is written to `outbox/` in the data dir.
    pub smtp: Option<SmtpConfig>,
    /// Sender of the email channel's messages.
    pub mail_from: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Optional platform admin created at start.
    pub admin: Option<BootstrapAdmin>,
    /// Hours after a month ends before the schedule closes it (invoices and payouts); late
    /// acknowledgements of the month are billed as adjustments of the next one.
    pub billing_close_delay_hours: u64,
    /// Days an invoice may stay unpaid after a failed payment before the subscriber's
    /// subscriptions to its vendor are paused (they resume when it is paid).
    pub dunning_days: u64,
    /// Memory, in MiB, the loaded models of `model` rules may take (least recently used ones
    /// are dropped beyond it, and loaded again on their next use).
    pub model_cache_mb: u64,
    /// The platform's share of each vendor's gross, in percent (a decimal string).
    pub platform_fee_percent: String,
    /// Per-vendor exceptions to `platform_fee_percent`: vendor id → percent.
    pub vendor_fee_percent: std::collections::BTreeMap<String, String>,
    /// For tests and demos only: the server's clock starts at this RFC 3339 instant and
    /// advances in real time from there (`WHARF_CLOCK_START`).
    pub clock_start: Option<String>,
    /// Stripe (`WHARF_STRIPE__SECRET_KEY`, `WHARF_STRIPE__WEBHOOK_SECRET`,
    /// `WHARF_STRIPE__API_BASE`); absent: invoices stay in Wharf.
    pub stripe: Option<StripeConfig>,
    /// Evaluation budgets and quotas (`[limits.budgets]`, `[limits.quotas]`,
    /// `WHARF_LIMITS__QUOTAS__SOURCES_PER_TENANT`, …).
    pub limits: wharf_core::limits::Limits,
    /// Connection timeouts and the connection limit of `wharf serve` (`[connections]`).
    pub connections: crate::serve::ConnectionLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: Backend::Local,
            aws: AwsConfig::default(),
            data_dir: PathBuf::from("wharf-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            require_vendor_approval: false,
            allow_private_webhooks: false,
            egress_allow: None,
            public_url: None,
            durability: Durability::Normal,
            issuer: "urn:wharf:local".into(),
            audience: "wharf-api".into(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 86_400,
            secret_overlap_secs: 86_400,
            webhook_retry_schedule_secs: vec![5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            webhook_timeout_secs: 10,
            webhook_disable_after_days: 5,
            log_retention_days: 30,
            smtp: None,
            mail_from: "Wharf <wharf@localhost>".into(),
            log_format: LogFormat::Text,
            admin: None,
            billing_close_delay_hours: 24,
            dunning_days: 7,
            model_cache_mb: 512,
            platform_fee_percent: "20".into(),
            vendor_fee_percent: std::collections::BTreeMap::new(),
            clock_start: None,
            stripe: None,
            limits: wharf_core::limits::Limits::default(),
            connections: crate::serve::ConnectionLimits::default(),
        }
    }
}

/// Top-level setting names, as `WHARF_*` variables may carry them. Other `WHARF_*` variables
/// (the log filter, the config file path, tools' own variables) are not settings: they are
/// ignored here rather than refused, so an unrelated variable never stops the server.
const SETTINGS: &[&str] = &[
    "backend",
    "aws",
    "data_dir",
    "listen",
    "require_vendor_approval",
    "allow_private_webhooks",
    "egress_allow",
    "public_url",
    "durability",
    "issuer",
    "audience",
    "access_token_ttl_secs",
    "refresh_token_ttl_secs",
    "secret_overlap_secs",
    "webhook_retry_schedule_secs",
    "webhook_timeout_secs",
    "webhook_disable_after_days",
    "log_retention_days",
    "log_format",
    "admin",
    "smtp",
    "mail_from",
    "platform_fee_percent",
    "vendor_fee_percent",
    "billing_close_delay_hours",
    "dunning_days",
    "model_cache_mb",
    "clock_start",
    "stripe",
    "limits",
    "connections",
];

impl Config {
    /// Reads the configuration: defaults, `wharf.toml` (or `WHARF_CONFIG`), `WHARF_*`.
    pub fn load() -> Result<Config, String> {
        let file = std::env::var("WHARF_CONFIG").unwrap_or_else(|_| "wharf.toml".into());
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&file))
            .merge(Env::prefixed("WHARF_").split("__").filter(|key| {
                let top = key
                    .as_str()
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                SETTINGS.contains(&top.as_str())
            }))
            .extract()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// The platform fee and its per-vendor exceptions, as percentages.
    #[allow(clippy::type_complexity)]
    pub fn fee_percents(&self) -> Result<(Decimal, HashMap<VendorId, Decimal>), String> {
        let percent = |key: &str, v: &str| {
            Amount::parse(v)
                .ok()
                .map(|a| a.0)
                .filter(|d| *d <= Decimal::ONE_HUNDRED)
                .ok_or_else(|| {
                    format!("invalid configuration: `{key}` must be a percentage from 0 to 100, like \"12.5\"")
                })
        };
        let default = percent("platform_fee_percent", &self.platform_fee_percent)?;
        let mut vendors = HashMap::new();
        for (vendor, v) in &self.vendor_fee_percent {
            let key = format!("vendor_fee_percent.{vendor}");
            let id = VendorId::from_str(vendor)
                .map_err(|_| format!("invalid configuration: `{key}`: not a vendor id"))?;
            vendors.insert(id, percent(&key, v)?);
        }
        Ok((default, vendors))
    }

    /// `clock_start`, parsed.
    pub fn clock_start(&self) -> Result<Option<time::OffsetDateTime>, String> {
        self.clock_start
            .as_deref()
            .map(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        format!("invalid configuration: `clock_start` is not an RFC 3339 time: {e}")
                    })
            })
            .transpose()
    }

    /// The delivery settings of the workers.
    pub fn delivery(&self) -> wharf_workers::deliver::DeliveryConfig {
        wharf_workers::deliver::DeliveryConfig {
            retry_schedule: self
                .webhook_retry_schedule_secs
                .iter()
                .map(|s| std::time::Duration::from_secs(*s))
                .collect(),
            timeout: std::time::Duration::from_secs(self.webhook_timeout_secs),
            disable_after: std::time::Duration::from_secs(self.webhook_disable_after_days * 86_400),
            ..wharf_workers::deliver::DeliveryConfig::default()
        }
    }

    /// The API's address for links in mail, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// Where outbound connections may go: `allow_private_webhooks` and `egress_allow`.
    pub fn egress(&self) -> Result<wharf_core::net::Egress, String> {
        let only = self
            .egress_allow
            .as_ref()
            .map(|list| {
                list.iter()
                    .map(|n| {
                        n.parse()
                            .map_err(|e| format!("invalid configuration: `egress_allow` {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(wharf_core::net::Egress {
            allow_private: self.allow_private_webhooks,
            only,
        })
    }

    /// Every budget, quota, timeout and the connection limit must be at least 1.
    fn validate_limits(&self) -> Result<(), String> {
        let budgets = &self.limits.budgets;
        let quotas = &self.limits.quotas;
        let connections = &self.connections;
        let values: [(&str, u64); 17] = [
            ("limits.budgets.filter", budgets.filter),
            ("limits.budgets.map", budgets.map),
            ("limits.budgets.enrich", budgets.enrich),
            ("limits.budgets.window", budgets.window),
            (
                "limits.budgets.subscription_filter",
                budgets.subscription_filter,
            ),
            (
                "limits.quotas.sources_per_tenant",
                quotas.sources_per_tenant.into(),
            ),
            (
                "limits.quotas.feeds_per_tenant",
                quotas.feeds_per_tenant.into(),
            ),
            (
                "limits.quotas.published_feeds_per_source",
                quotas.published_feeds_per_source.into(),
            ),
            (
                "limits.quotas.subscriptions_per_subscriber",
                quotas.subscriptions_per_subscriber.into(),
            ),
            (
                "limits.quotas.sockets_per_subscription",
                quotas.sockets_per_subscription.into(),
            ),
            (
                "limits.quotas.replays_per_hour",
                quotas.replays_per_hour.into(),
            ),
            (
                "limits.quotas.records_per_replay",
                quotas.records_per_replay.into(),
            ),
            (
                "limits.quotas.records_per_backfill",
                quotas.records_per_backfill.into(),
            ),
            (
                "connections.max_connections",
                connections.max_connections as u64,
            ),
            (
                "connections.header_read_timeout_secs",
                connections.header_read_timeout_secs,
            ),
            (
                "connections.body_read_timeout_secs",
                connections.body_read_timeout_secs,
            ),
            (
                "connections.idle_timeout_secs",
                connections.idle_timeout_secs,
            ),
        ];
        match values.iter().find(|(_, v)| *v == 0) {
            Some((key, _)) => Err(format!("invalid configuration: `{key}` must be at least 1")),
            None => Ok(()),
        }
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("invalid configuration: `{key}` {why}"));
        if self.access_token_ttl_secs < 60 || self.access_token_ttl_secs > 86_400 {
            return bad("access_token_ttl_secs", "must be between 60 and 86400");
        }
        if self.refresh_token_ttl_secs < self.access_token_ttl_secs {
            return bad(
                "refresh_token_ttl_secs",
                "must not be shorter than access_token_ttl_secs",
            );
        }
        if !(1..=120).contains(&self.webhook_timeout_secs) {
            return bad("webhook_timeout_secs", "must be between 1 and 120");
        }
        if self.webhook_disable_after_days == 0 {
            return bad("webhook_disable_after_days", "must be at least 1");
        }
        if self.issuer.trim().is_empty() {
            return bad("issuer", "must not be empty");
        }
        if self.audience.trim().is_empty() {
            return bad("audience", "must not be empty");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        self.fee_percents()?;
        self.clock_start()?;
        self.validate_limits()?;
        self.egress()?;
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| format!("invalid configuration: `public_url` {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(
                    "invalid configuration: `public_url` must be an http or https URL".into(),
                );
            }
        }
        if let Some(admin) = &self.admin {
            wharf_core::domain::Email::parse(&admin.email)
                .map_err(|e| format!("invalid configuration: `admin.email` {e}"))?;
            wharf_core::credentials::check_password(&admin.password.0)
                .map_err(|e| format!("invalid configuration: `admin.password` {e}"))?;
        }
        Ok(())
    }
}
