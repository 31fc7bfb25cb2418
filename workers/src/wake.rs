//! The [`Notifier`] of a process: wakes its workers' loops when records are stored, and a
//! feed's live readers when that feed gets new outputs (each socket waits on its own feed,
//! so an idle socket costs nothing until its feed moves).

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use wharf_core::FeedId;
use wharf_core::ports::Notifier;

/// Wake-ups of this process.
#[derive(Default)]
pub struct Wakers {
    raw: Notify,
    outputs: Notify,
    feeds: Mutex<HashMap<FeedId, Arc<Notify>>>,
}

impl Wakers {
    /// Completes when raw records were stored since the last call, or after `timeout`.
    pub async fn raw_stored(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.raw.notified()).await;
    }

    /// Completes when outputs were stored or a subscription changed since the last call, or
    /// after `timeout`.
    pub async fn outputs_stored(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.outputs.notified()).await;
    }

    /// Feeds with a reader waiting now.
    pub fn waiting_feeds(&self) -> usize {
        self.feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[async_trait]
impl Notifier for Wakers {
    fn raw_appended(&self) {
        self.raw.notify_one();
    }

    fn outputs_appended(&self) {
        self.outputs.notify_one();
    }

    fn feed_appended(&self, feed: &FeedId) {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waiting) = feeds.get(feed) {
            waiting.notify_waiters();
        }
    }

    async fn feed_changed(&self, feed: &FeedId, timeout: Duration) {
        let waiting = self
            .feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(feed.clone())
            .or_default()
            .clone();
        let notified = waiting.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let _ = tokio::time::timeout(timeout, notified).await;
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: no other reader waits on this feed.
        if Arc::strong_count(&waiting) == 2 {
            feeds.remove(feed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_wakes_when_its_feed_gets_outputs_and_not_for_another_feed() {
        let wakers = Arc::new(Wakers::default());
        let (mine, other) = (FeedId::new(), FeedId::new());
        let waiting = {
            let (wakers, mine) = (wakers.clone(), mine.clone());
            tokio::spawn(async move { wakers.feed_changed(&mine, Duration::from_secs(60)).await })
        };
        while wakers.waiting_feeds() == 0 {
            tokio::task::yield_now().await;
        }
        wakers.feed_appended(&other);
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "another feed's outputs do not wake it"
        );
        wakers.feed_appended(&mine);
        let woke = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(matches!(woke, Ok(Ok(()))));
        assert_eq!(
            wakers.waiting_feeds(),
            0,
            "a feed nobody waits on is forgotten"
        );
    }
}
