//! Feeds (sellable products) and their price plans; their pipelines are in `pipeline`.

use super::pipeline::{Pipeline, PipelineSpec};
use super::{check_name, is_slug};
use crate::error::Problems;
use crate::money::{Amount, Currency};
use crate::{FeedId, SourceId, Timestamp, VendorId};
use serde::{Deserialize, Serialize};

/// Who can find a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Visibility {
    /// Listed in the catalog once published.
    #[default]
    Public,
    /// Not listed; subscribers need the feed id from the vendor.
    Private,
}

/// A feed's lifecycle: draft → published → archived (archived is final).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FeedStatus {
    /// Being prepared; nobody can subscribe.
    #[default]
    Draft,
    /// On sale.
    Published,
    /// No longer on sale; existing subscriptions stop.
    Archived,
}

impl FeedStatus {
    /// Whether the lifecycle allows going from `self` to `next`.
    pub fn can_become(self, next: FeedStatus) -> bool {
        use FeedStatus::*;
        matches!(
            (self, next),
            (Draft, Published) | (Published, Archived) | (Draft, Archived)
        ) || self == next
    }
}

/// A graduated price tier over billable deliveries (those beyond the included ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tier {
    /// Upper bound (inclusive) of billable deliveries priced by this tier; `null` on the last tier.
    pub up_to: Option<u64>,
    /// Price per delivery in this tier.
    pub unit_price: Amount,
}

/// A price plan of a feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "49.00", "included_deliveries": 10000,
    "tiers": [{"up_to": 100000, "unit_price": "0.0010"}, {"up_to": null, "unit_price": "0.0005"}]
})))]
pub struct Plan {
    /// Identifier within the feed (`[a-z0-9_-]`).
    pub id: String,
    /// Set by Wharf (ignored when sent): 1 when the plan is first put on sale, one more each
    /// time its prices (currency, fee, included deliveries, tiers) change. A subscription stays
    /// on the version it was bought at.
    #[serde(default = "first_plan_version")]
    pub version: u32,
    /// Display name.
    pub name: String,
    /// Currency of every amount of the plan.
    pub currency: Currency,
    /// Fee per month, prorated by the days active.
    pub monthly_fee: Amount,
    /// Deliveries per month included in the fee.
    pub included_deliveries: u64,
    /// Graduated tiers, ascending; the last one is unbounded.
    pub tiers: Vec<Tier>,
    /// Price of one backfill record (history bought with a subscription); without it,
    /// backfill is rated through the tiers as if delivered after the month's deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill_unit_price: Option<Amount>,
}

const MAX_UNIT_PRICE_SCALE: u32 = 8;

/// The version of a plan put on sale for the first time (and of plans stored before versions).
pub fn first_plan_version() -> u32 {
    1
}

impl Plan {
    /// Whether `other` charges exactly what this plan does.
    pub fn same_prices(&self, other: &Plan) -> bool {
        self.currency == other.currency
            && self.monthly_fee == other.monthly_fee
            && self.included_deliveries == other.included_deliveries
            && self.tiers == other.tiers
            && self.backfill_unit_price == other.backfill_unit_price
    }

    /// Checks amounts and tier order; errors point at `{prefix}…`.
    pub fn validate(&self, prefix: &str, p: &mut Problems) {
        if !is_slug(&self.id) {
            p.add(format!("{prefix}id"), "must match [a-z0-9_-]{1,64}");
        }
        check_name(p, &format!("{prefix}name"), &self.name, 100);
        if self.monthly_fee.scale() > self.currency.minor_units() {
            p.add(
                format!("{prefix}monthly_fee"),
                format!(
                    "{} allows at most {} decimal places",
                    self.currency,
                    self.currency.minor_units()
                ),
            );
        }
        if self.tiers.is_empty() {
            p.add(
                format!("{prefix}tiers"),
                "needs at least one tier; the last one has `up_to: null`",
            );
        }
        let mut previous: Option<u64> = None;
        for (i, tier) in self.tiers.iter().enumerate() {
            let last = i + 1 == self.tiers.len();
            match (tier.up_to, last) {
                (None, false) => p.add(
                    format!("{prefix}tiers[{i}].up_to"),
                    "only the last tier may be unbounded",
                ),
                (Some(_), true) => p.add(
                    format!("{prefix}tiers[{i}].up_to"),
                    "the last tier must be unbounded (null)",
                ),
                (Some(n), false) => {
                    if n == 0 || previous.is_some_and(|prev| n <= prev) {
                        p.add(
                            format!("{prefix}tiers[{i}].up_to"),
                            "tiers must be in strictly ascending order of up_to, above 0",
                        );
                    }
                    previous = Some(n);
                }
                (None, true) => {}
            }
            if tier.unit_price.scale() > MAX_UNIT_PRICE_SCALE {
                p.add(
                    format!("{prefix}tiers[{i}].unit_price"),
                    format!("at most {MAX_UNIT_PRICE_SCALE} decimal places"),
                );
            }
        }
        if self
            .backfill_unit_price
            .is_some_and(|price| price.scale() > MAX_UNIT_PRICE_SCALE)
        {
            p.add(
                format!("{prefix}backfill_unit_price"),
                format!("at most {MAX_UNIT_PRICE_SCALE} decimal places"),
            );
        }
    }
}

/// Checks a feed's list of plans (unique ids, each plan valid).
pub fn validate_plans(plans: &[Plan], prefix: &str, p: &mut Problems) {
    if plans.len() > 20 {
        p.add(format!("{prefix}plans"), "at most 20 plans");
    }
    for (i, plan) in plans.iter().enumerate() {
        plan.validate(&format!("{prefix}plans[{i}]."), p);
        if plans[..i].iter().any(|q| q.id == plan.id) {
            p.add(format!("{prefix}plans[{i}].id"), "duplicate plan id");
        }
    }
}

/// Entries a private feed's allow-list may hold.
pub const MAX_ALLOWED_SUBSCRIBERS: usize = 1000;

/// A sellable feed: a source, a pipeline and plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Feed {
    /// The feed's id.
    pub id: FeedId,
    /// The owning tenant.
    pub tenant_id: VendorId,
    /// The source whose records feed the pipeline.
    pub source_id: SourceId,
    /// Display name.
    pub name: String,
    /// What subscribers get.
    pub description: String,
    /// The current pipeline.
    pub pipeline: Pipeline,
    /// Price plans on sale.
    pub plans: Vec<Plan>,
    /// Plan versions no longer on sale (replaced by a later version, or removed) that
    /// subscriptions are on: they are rated at these prices until they end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_plans: Vec<Plan>,
    /// Catalog visibility.
    pub visibility: Visibility,
    /// Who may subscribe to a private feed: subscriber ids (`usr_…`) and email domains
    /// (`@fund.example`). Anyone else is answered as if the feed did not exist. Ignored for
    /// public feeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_subscribers: Vec<String>,
    /// Lifecycle state.
    pub status: FeedStatus,
    /// When a deprecated feed ends: it sells to no new subscriber, and at this instant it is
    /// archived and its subscriptions end.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub ends_at: Option<Timestamp>,
    /// Example output record shown in the catalog.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub sample: Option<serde_json::Value>,
    /// Grows by one on every change (optimistic concurrency).
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

impl Feed {
    /// The plan on sale with id `plan`.
    pub fn plan(&self, plan: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == plan)
    }

    /// The version of plan `plan` a new subscription buys; adds what stops it to `p` (no
    /// such plan on sale, or a deprecated feed).
    pub fn on_sale(&self, plan: &str, p: &mut crate::error::Problems) -> Option<u32> {
        if let Some(end) = self.ends_at {
            let at = crate::rfc3339(end);
            p.add(
                "feed_id",
                format!("the feed is deprecated: it takes no new subscriptions and ends at {at}"),
            );
        }
        let version = self.plan(plan).map(|p| p.version);
        if version.is_none() {
            p.add("plan_id", format!("the feed has no plan `{plan}` on sale"));
        }
        version
    }

    /// Version `version` of plan `plan`, on sale or retired.
    pub fn plan_version(&self, plan: &str, version: u32) -> Option<&Plan> {
        self.plans
            .iter()
            .chain(&self.retired_plans)
            .find(|p| p.id == plan && p.version == version)
    }

    /// Puts `plans` on sale in place of the current ones. A plan whose prices are unchanged
    /// keeps its version; a new plan, or one whose prices changed, takes the next version of
    /// its id (never the version of a subscription). Every version taken off sale by this change is kept
    /// among the retired plans, and earlier retired versions stay only while a subscription
    /// is on them (`in_use`: plan id and version of every subscription, ended or not).
    pub fn replace_plans(&mut self, mut plans: Vec<Plan>, in_use: &[(String, u32)]) {
        let latest = |id: &str, feed: &Feed| {
            feed.plans
                .iter()
                .chain(&feed.retired_plans)
                .filter(|p| p.id == id)
                .map(|p| p.version)
                .max()
        };
        for plan in &mut plans {
            plan.version = match self.plan(&plan.id) {
                Some(now) if now.same_prices(plan) => now.version,
                _ => latest(&plan.id, self).map_or(first_plan_version(), |v| v + 1),
            };
        }
        let used = |p: &Plan| in_use.iter().any(|(id, v)| *id == p.id && *v == p.version);
        self.retired_plans.retain(used);
        let off_sale: Vec<Plan> = self
            .plans
            .drain(..)
            .filter(|old| {
                !plans
                    .iter()
                    .any(|new| new.id == old.id && new.version == old.version)
            })
            .collect();
        self.retired_plans.extend(off_sale);
        self.plans = plans;
    }

    /// Whether the subscriber `id`, signed up with `email`, may subscribe.
    pub fn admits(&self, id: &crate::UserId, email: &super::Email) -> bool {
        if self.visibility == Visibility::Public {
            return true;
        }
        let domain = email.as_str().rsplit_once('@').map(|(_, d)| d);
        self.allowed_subscribers.iter().any(|entry| {
            entry.strip_prefix('@').map_or_else(
                || entry == id.as_str(),
                |allowed| domain.is_some_and(|d| d.eq_ignore_ascii_case(allowed)),
            )
        })
    }

    /// Checks the editable fields.
    pub fn validate_fields(&self, p: &mut Problems) {
        check_name(p, "name", &self.name, 100);
        if self.allowed_subscribers.len() > MAX_ALLOWED_SUBSCRIBERS {
            p.add(
                "allowed_subscribers",
                format!("must hold at most {MAX_ALLOWED_SUBSCRIBERS} entries"),
            );
        }
        for (i, entry) in self.allowed_subscribers.iter().enumerate() {
            let valid = match entry.strip_prefix('@') {
                Some(domain) => super::Email::parse(&format!("x@{domain}")).is_ok(),
                None => crate::UserId::parse(entry).is_ok(),
            };
            if !valid {
                p.add(
                    format!("allowed_subscribers[{i}]"),
                    "must be a subscriber id (usr_…) or an email domain (@fund.example)",
                );
            }
        }
        if self.description.chars().count() > 4000 {
            p.add("description", "must be at most 4000 characters");
        }
        validate_plans(&self.plans, "", p);
        if self.status == FeedStatus::Published && self.plans.is_empty() {
            p.add("plans", "a published feed needs at least one plan");
        }
        if self
            .sample
            .as_ref()
            .is_some_and(|s| s.to_string().len() > 16 * 1024)
        {
            p.add("sample", "must be at most 16 KiB of JSON");
        }
    }
}

/// The body of `POST /v1/feeds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "name": "Large trades", "source_id": "src_0193a5e4c2a87c3b9d41e2f6a8b0c1d2",
    "description": "Trades above 100 USD",
    "pipeline": {"rules": [{"type": "filter", "expr": "record.price > 100.0"}]},
    "plans": [{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "49.00",
               "included_deliveries": 10000,
               "tiers": [{"up_to": 100000, "unit_price": "0.0010"}, {"up_to": null, "unit_price": "0.0005"}]}],
    "visibility": "public", "status": "published"
})))]
pub struct NewFeed {
    /// Display name.
    pub name: String,
    /// The tenant's source feeding it.
    pub source_id: SourceId,
    /// What subscribers get.
    #[serde(default)]
    pub description: String,
    /// The first pipeline (version 1); empty when absent.
    #[serde(default)]
    pub pipeline: PipelineSpec,
    /// Price plans.
    #[serde(default)]
    pub plans: Vec<Plan>,
    /// Defaults to `public`.
    #[serde(default)]
    pub visibility: Visibility,
    /// Who may subscribe when the feed is private: subscriber ids and `@`email domains.
    #[serde(default)]
    pub allowed_subscribers: Vec<String>,
    /// Defaults to `draft`; may be `published` directly.
    #[serde(default)]
    pub status: FeedStatus,
    /// Example output record for the catalog.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub sample: Option<serde_json::Value>,
}

/// The body of `PATCH /v1/feeds/{id}`; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedPatch {
    /// New display name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// The plans on sale from now on. A plan whose prices change becomes its next version for
    /// new subscribers; subscriptions keep the version they bought, and a plan removed stays
    /// rateable (among `retired_plans`) for the subscriptions on it.
    pub plans: Option<Vec<Plan>>,
    /// New visibility.
    pub visibility: Option<Visibility>,
    /// A new allow-list for a private feed (replaces the old one).
    pub allowed_subscribers: Option<Vec<String>>,
    /// New status (draft → published → archived).
    pub status: Option<FeedStatus>,
    /// New sample.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub sample: Option<serde_json::Value>,
    /// Deprecates a published feed: from now it takes no new subscriptions, subscribers are
    /// told by email, and at this instant (in the future) it is archived, ending its
    /// subscriptions. A deprecation can be moved to another future instant, not withdrawn.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub ends_at: Option<Timestamp>,
}

impl CatalogEntry {
    /// The catalog's view of `feed`, sold by `vendor`, whose source's records follow
    /// `schema`: the one place an entry is assembled, whichever store lists it.
    pub fn of(
        feed: Feed,
        vendor: super::Vendor,
        schema: Option<serde_json::Value>,
    ) -> CatalogEntry {
        CatalogEntry {
            feed_id: feed.id,
            vendor_id: vendor.id,
            vendor_name: vendor.name,
            name: feed.name,
            description: feed.description,
            plans: feed.plans,
            schema,
            sample: feed.sample,
            ends_at: feed.ends_at,
        }
    }
}

/// A published feed as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CatalogEntry {
    /// The feed's id (subscribe with it).
    pub feed_id: FeedId,
    /// The selling vendor.
    pub vendor_id: VendorId,
    /// The vendor's name.
    pub vendor_name: String,
    /// Feed name.
    pub name: String,
    /// Feed description.
    pub description: String,
    /// Price plans.
    pub plans: Vec<Plan>,
    /// JSON Schema of the source's records, when the vendor gave one.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub schema: Option<serde_json::Value>,
    /// Example output record.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub sample: Option<serde_json::Value>,
    /// When the feed ends, if its vendor deprecated it: it takes no new subscriptions.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub ends_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoreError;

    fn plan(tiers: Vec<(Option<u64>, &str)>) -> Plan {
        Plan {
            version: 1,
            backfill_unit_price: None,
            id: "pro".into(),
            name: "Pro".into(),
            currency: Currency::parse("usd").unwrap_or_else(|e| panic!("{e}")),
            monthly_fee: Amount::parse("49.00").unwrap_or_default(),
            included_deliveries: 10,
            tiers: tiers
                .into_iter()
                .map(|(up_to, p)| Tier {
                    up_to,
                    unit_price: Amount::parse(p).unwrap_or_default(),
                })
                .collect(),
        }
    }

    fn errors(plan: &Plan) -> Vec<String> {
        let mut p = Problems::default();
        plan.validate("", &mut p);
        match p.finish() {
            Err(CoreError::Validation(e)) => e.into_iter().map(|e| e.path).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn plans_need_ascending_tiers_ending_unbounded() {
        assert!(errors(&plan(vec![(Some(100), "0.01"), (None, "0.005")])).is_empty());
        assert_eq!(
            errors(&plan(vec![(Some(100), "0.01")])),
            vec!["tiers[0].up_to"]
        );
        assert_eq!(
            errors(&plan(vec![
                (Some(100), "0.01"),
                (Some(50), "0.01"),
                (None, "0")
            ])),
            vec!["tiers[1].up_to"]
        );
        assert_eq!(
            errors(&plan(vec![(None, "0.01"), (None, "0.01")])),
            vec!["tiers[0].up_to"]
        );
        assert_eq!(errors(&plan(vec![])), vec!["tiers"]);
    }

    #[test]
    fn a_fee_finer_than_the_minor_unit_is_refused() {
        let mut p = plan(vec![(None, "0.001")]);
        p.monthly_fee = Amount::parse("1.001").unwrap_or_default();
        assert_eq!(errors(&p), vec!["monthly_fee"]);
    }

    fn feed_with(plans: Vec<Plan>) -> Feed {
        let mut feed: Feed = serde_json::from_value(serde_json::json!({
            "id": "feed_0193a5e4c2a87c3b9d41e2f6a8b0c1d2",
            "tenant_id": "ven_0193a5e4c2a87c3b9d41e2f6a8b0c1d2",
            "source_id": "src_0193a5e4c2a87c3b9d41e2f6a8b0c1d2",
            "name": "Trades", "description": "", "pipeline": {"version": 1, "rules": []},
            "plans": [], "visibility": "public", "status": "published", "sample": null,
            "revision": 1, "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        feed.plans = plans;
        feed
    }

    fn versions(plans: &[Plan]) -> Vec<(String, u32, String)> {
        plans
            .iter()
            .map(|p| (p.id.clone(), p.version, p.tiers[0].unit_price.to_string()))
            .collect()
    }

    #[test]
    fn changed_prices_make_a_new_version_and_versions_in_use_stay_rateable() {
        let v = |id: &str, version: u32, price: &str| (id.to_owned(), version, price.to_owned());
        let mut feed = feed_with(vec![plan(vec![(None, "0.01")])]);
        let mut renamed = plan(vec![(None, "0.01")]);
        renamed.name = "Professional".into();
        feed.replace_plans(vec![renamed], &[]);
        assert_eq!(
            versions(&feed.plans),
            vec![v("pro", 1, "0.01")],
            "a name is not a price"
        );
        assert!(feed.retired_plans.is_empty());

        let in_use = [("pro".to_owned(), 1)];
        feed.replace_plans(vec![plan(vec![(None, "1.00")])], &in_use);
        assert_eq!(versions(&feed.plans), vec![v("pro", 2, "1.00")]);
        assert_eq!(versions(&feed.retired_plans), vec![v("pro", 1, "0.01")]);

        // Taken off sale: version 2 is retired with the change; version 1 stays while used.
        feed.replace_plans(vec![], &in_use);
        assert!(feed.plans.is_empty());
        assert_eq!(
            versions(&feed.retired_plans),
            vec![v("pro", 1, "0.01"), v("pro", 2, "1.00")]
        );
        assert_eq!(feed.plan_version("pro", 1).map(|p| p.version), Some(1));
        assert!(feed.plan("pro").is_none(), "not on sale");

        // Put back on sale: a version never used before; unused retired versions go.
        feed.replace_plans(vec![plan(vec![(None, "0.01")])], &in_use);
        assert_eq!(versions(&feed.plans), vec![v("pro", 3, "0.01")]);
        assert_eq!(versions(&feed.retired_plans), vec![v("pro", 1, "0.01")]);
    }
}
