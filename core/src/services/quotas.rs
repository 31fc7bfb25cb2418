//! Quotas, checked before an object is made: a tenant, subscriber or subscription past one
//! gets a 409 naming it (`CoreError::QuotaExceeded`). Counting reads the objects a page at a
//! time and stops at the quota, so a check costs at most `quota / page` reads; two requests
//! racing may both pass and end one over, which a quota tolerates.

use super::Services;
use crate::domain::{FeedStatus, SubscriptionStatus};
use crate::{CoreError, PageRequest, SourceId, TenantId, UserId};

/// How many items the pages of `$list` (an async call over `$page`) hold for which
/// `$counts` holds of `$item`, stopping once there are `$limit`.
macro_rules! count {
    ($limit:expr, |$page:ident| $list:expr, |$item:ident| $counts:expr) => {{
        let mut $page = PageRequest::first(crate::page::MAX_LIMIT);
        let mut n = 0u64;
        loop {
            let items = $list.await?;
            n += items.items.iter().filter(|$item| $counts).count() as u64;
            match items.next_cursor {
                Some(cursor) if n < u64::from($limit) => $page.cursor = Some(cursor),
                _ => break n,
            }
        }
    }};
}

/// Fails with the quota error when `n` objects already use up `quota` of `limit`: one more
/// would be over it.
fn below(quota: &'static str, limit: u32, n: u64) -> Result<(), CoreError> {
    if n >= u64::from(limit) {
        return Err(CoreError::quota(quota, limit));
    }
    Ok(())
}

impl Services {
    /// Room for one more source in `tenant`.
    pub(super) async fn room_for_source(&self, tenant: &TenantId) -> Result<(), CoreError> {
        let limit = self.settings.limits.quotas.sources_per_tenant;
        let n = count!(limit, |page| self.store.list_sources(tenant, &page), |_s| {
            true
        });
        below("sources_per_tenant", limit, n)
    }

    /// Room for one more feed in `tenant` (archived feeds do not count), and, when it is to
    /// be published, for one more published feed of `source`.
    pub(super) async fn room_for_feed(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        published: bool,
    ) -> Result<(), CoreError> {
        let quotas = &self.settings.limits.quotas;
        let n = count!(
            quotas.feeds_per_tenant,
            |page| self.store.list_feeds(tenant, &page),
            |f| f.status != FeedStatus::Archived
        );
        below("feeds_per_tenant", quotas.feeds_per_tenant, n)?;
        if published {
            self.room_to_publish(tenant, source).await?;
        }
        Ok(())
    }

    /// Room for one more published feed of `source`.
    pub(super) async fn room_to_publish(
        &self,
        tenant: &TenantId,
        source: &SourceId,
    ) -> Result<(), CoreError> {
        let limit = self.settings.limits.quotas.published_feeds_per_source;
        let n = count!(limit, |page| self.store.list_feeds(tenant, &page), |f| f
            .status
            == FeedStatus::Published
            && &f.source_id == source);
        below("published_feeds_per_source", limit, n)
    }

    /// Room for one more subscription of `subscriber` (cancelled ones do not count).
    pub(super) async fn room_for_subscription(&self, subscriber: &UserId) -> Result<(), CoreError> {
        let limit = self.settings.limits.quotas.subscriptions_per_subscriber;
        let n = count!(
            limit,
            |page| self
                .store
                .list_subscriptions_of_subscriber(subscriber, &page),
            |s| s.status != SubscriptionStatus::Cancelled
        );
        below("subscriptions_per_subscriber", limit, n)
    }

    /// Room for one more open socket of a subscription that has `open` now.
    pub fn room_for_socket(&self, open: usize) -> Result<(), CoreError> {
        let limit = self.settings.limits.quotas.sockets_per_subscription;
        below("sockets_per_subscription", limit, open as u64)
    }
}
