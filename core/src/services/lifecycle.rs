//! A feed's end: a vendor deprecates a published feed with an end date (`ends_at` in
//! `PATCH /v1/feeds/{id}`); from then it takes no new subscriptions, the catalog shows the
//! date, and its subscribers are told by email. When the date comes, the schedule archives
//! it, which ends its subscriptions at that instant (the month's fee prorated to it).

use super::Services;
use crate::domain::{Feed, FeedStatus, SubscriptionStatus};
use crate::error::Problems;
use crate::{CoreError, PageRequest, Timestamp};

impl Services {
    /// Applies a deprecation asked for in a feed's patch, adding to `p` what is wrong with
    /// it; answers whether the end date changed (its subscribers are then told).
    pub(super) fn deprecate(
        &self,
        feed: &mut Feed,
        ends_at: Option<Timestamp>,
        p: &mut Problems,
    ) -> bool {
        let Some(at) = ends_at else {
            return false;
        };
        if feed.status != FeedStatus::Published {
            p.add("ends_at", "only a published feed can be deprecated");
            return false;
        }
        if at <= self.clock.now() {
            p.add("ends_at", "must be in the future");
            return false;
        }
        let changed = feed.ends_at != Some(at);
        feed.ends_at = Some(at);
        changed
    }

    /// Tells every subscriber of a deprecated feed when it ends.
    pub(super) async fn announce_end(&self, feed: &Feed) -> Result<(), CoreError> {
        let Some(end) = feed.ends_at else {
            return Ok(());
        };
        for sub in self
            .every_subscription_of_feed(&feed.tenant_id, &feed.id)
            .await?
        {
            if sub.status == SubscriptionStatus::Cancelled {
                continue;
            }
            let body = format!(
                "The vendor has deprecated the feed \"{}\": it ends at {}, and your \
                 subscription {} ends with it. This month's fee is charged only up to then.\n",
                feed.name,
                crate::rfc3339(end),
                sub.id
            );
            let subject = format!("{} ends on {}", feed.name, end.date());
            self.mail_subscriber(&sub.subscriber_id, &subject, &body)
                .await;
        }
        Ok(())
    }

    /// Archives every deprecated feed whose end has come, ending its subscriptions at the
    /// announced instant. What the schedule of either shape calls; answers how many ended.
    pub async fn end_deprecated_feeds(&self) -> Result<usize, CoreError> {
        let now = self.clock.now();
        let mut ended = 0;
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let feeds = self.store.list_deprecated_feeds(&page).await?;
            for feed in feeds.items {
                let Some(end) = feed.ends_at.filter(|end| *end <= now) else {
                    continue;
                };
                // Subscriptions first: a failure halfway leaves the feed published and
                // listed, so the next tick ends the rest.
                match self.end_subscriptions_of_feed(&feed, end).await {
                    Ok(_) => {}
                    // Another tick is ending them: the next tick finishes what is left.
                    Err(CoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                }
                let mut archived = feed;
                archived.status = FeedStatus::Archived;
                let saved = match self.save_feed(archived).await {
                    Ok(saved) => saved,
                    // Another tick archived it meanwhile.
                    Err(CoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                };
                self.close_topic(&saved).await;
                tracing::info!(feed.id = %saved.id, tenant.id = %saved.tenant_id, "deprecated feed ended");
                ended += 1;
            }
            match feeds.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(ended),
            }
        }
    }
}
