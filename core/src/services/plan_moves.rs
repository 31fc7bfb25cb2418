//! Moving subscriptions to a plan's version on sale: a vendor who changed a plan's prices
//! schedules the move of the subscriptions still on earlier versions. It takes effect at the
//! start of the next month, so no month is rated at two prices, and each subscriber is told
//! by email what changes and when.

use super::Services;
use crate::billing::Period;
use crate::domain::{Feed, Plan, PlanMove, Principal, Role, SubscriptionStatus};
use crate::{CoreError, FeedId, Timestamp};
use serde::Serialize;

/// The answer of `POST /v1/feeds/{id}/plans/{plan_id}/move`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanMoveScheduled {
    /// The plan.
    pub plan_id: String,
    /// The version the subscriptions move to: the one on sale.
    pub version: u32,
    /// When the move takes effect: the start of the next month.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub takes_effect_at: Timestamp,
    /// Subscriptions moved (those already on that version, or ended, are left as they are).
    pub subscriptions: usize,
}

impl Services {
    /// Moves every running subscription of `plan_id` on an earlier version to the version on
    /// sale, from the start of next month, and mails each subscriber the new prices.
    /// Asking again changes nothing more.
    pub async fn schedule_plan_move(
        &self,
        who: &Principal,
        feed_id: &FeedId,
        plan_id: &str,
    ) -> Result<PlanMoveScheduled, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        let feed = self.store.get_feed(tenant, feed_id).await?;
        let plan = feed
            .plan(plan_id)
            .ok_or(CoreError::NotFound("plan on sale"))?
            .clone();
        let from = Period::of(self.clock.now()).next().start();
        let mut moved = 0;
        for mut sub in self.every_subscription_of_feed(tenant, feed_id).await? {
            let going = sub.status != SubscriptionStatus::Cancelled;
            let last = sub.plan_versions().last().unwrap_or(sub.plan_version);
            if sub.plan_id != plan.id || !going || last == plan.version {
                continue;
            }
            sub.plan_moves.retain(|m| m.from < from);
            sub.plan_moves.push(PlanMove {
                version: plan.version,
                from,
            });
            sub.revision += 1;
            sub.updated_at = self.clock.now();
            self.store.update_subscription(&sub, None).await?;
            moved += 1;
            self.announce_move(&feed, &plan, &sub.subscriber_id, from)
                .await;
        }
        Ok(PlanMoveScheduled {
            plan_id: plan.id,
            version: plan.version,
            takes_effect_at: from,
            subscriptions: moved,
        })
    }

    /// Mails a subscriber the prices its subscription moves to.
    async fn announce_move(&self, feed: &Feed, plan: &Plan, to: &crate::UserId, from: Timestamp) {
        let when = crate::rfc3339(from);
        let tiers: Vec<String> = plan
            .tiers
            .iter()
            .map(|t| match t.up_to {
                Some(n) => format!("{} per delivery up to {n}", t.unit_price),
                None => format!("{} per delivery beyond", t.unit_price),
            })
            .collect();
        let body = format!(
            "From {when}, your subscription to \"{}\" is charged at version {} of the plan \
             \"{}\": a monthly fee of {} {}, {} deliveries included, then {}.\n\nYou can \
             cancel before then to keep your current prices until you leave.\n",
            feed.name,
            plan.version,
            plan.name,
            plan.monthly_fee,
            plan.currency,
            plan.included_deliveries,
            tiers.join(", ")
        );
        let subject = format!("New prices for {} from {when}", feed.name);
        self.mail_subscriber(to, &subject, &body).await;
    }
}
