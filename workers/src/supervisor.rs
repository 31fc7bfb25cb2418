//! One delivery task per subscription, wherever the process runs long (the local shape, and
//! `wharf serve --backend aws`): a subscription woken while its task runs gets one more pass
//! from that task instead of a second task, so passes over one subscription never overlap,
//! and a slow or hanging endpoint only ever delays its own subscription.

use crate::deliver::{self, DeliveryConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use wharf_core::domain::Subscription;
use wharf_core::{Services, SubscriptionId};

/// Starts and tracks the delivery tasks.
#[derive(Clone)]
pub struct Supervisor {
    services: Services,
    config: DeliveryConfig,
    /// Passes one task makes per wake-up before it looks at the flag again.
    passes: usize,
    /// The running tasks, each with whether it was woken again meanwhile.
    running: Arc<Mutex<HashMap<SubscriptionId, bool>>>,
    /// Told when the last running task ends.
    idle: Arc<tokio::sync::Notify>,
}

impl Supervisor {
    /// A supervisor whose tasks make at most `passes` delivery passes per wake-up.
    pub fn new(services: Services, config: DeliveryConfig, passes: usize) -> Supervisor {
        Supervisor {
            services,
            config,
            passes,
            running: Arc::default(),
            idle: Arc::default(),
        }
    }

    /// Makes sure `sub` gets a delivery pass soon: starts its task, or asks the running one
    /// for another pass. Subscriptions Wharf's sender does not deliver are left alone.
    pub fn wake(&self, sub: Subscription) {
        if !self.services.is_sent_by_wharf(&sub) {
            return;
        }
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(again) = running.get_mut(&sub.id) {
                *again = true;
                return;
            }
            running.insert(sub.id.clone(), false);
        }
        let this = self.clone();
        tokio::spawn(async move { this.run(sub).await });
    }

    /// Whether a task of `sub` is running.
    pub fn is_running(&self, sub: &SubscriptionId) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(sub)
    }

    /// Completes once no task is running.
    pub async fn until_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so an end between the two is not missed.
            idle.as_mut().enable();
            if self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                return;
            }
            idle.await;
        }
    }

    async fn run(&self, sub: Subscription) {
        // A pass that panics ends the task: the guard forgets it, so the next wake starts anew.
        let mut guard = Registered {
            running: &self.running,
            idle: &self.idle,
            id: &sub.id,
            done: false,
        };
        loop {
            let drained = deliver::drain(&self.services, &sub, &self.config, self.passes).await;
            if let Err(e) = drained {
                tracing::warn!(
                    tenant.id = %sub.tenant_id,
                    subscription.id = %sub.id,
                    error = %e,
                    "delivery pass failed"
                );
            }
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            match running.get_mut(&sub.id) {
                Some(again) if *again => *again = false,
                _ => {
                    // Removed under the lock that `wake` checks: no wake-up is lost.
                    running.remove(&sub.id);
                    if running.is_empty() {
                        self.idle.notify_waiters();
                    }
                    guard.done = true;
                    return;
                }
            }
        }
    }
}

/// Forgets a task that ended without removing itself.
struct Registered<'a> {
    running: &'a Mutex<HashMap<SubscriptionId, bool>>,
    idle: &'a tokio::sync::Notify,
    id: &'a SubscriptionId,
    done: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            running.remove(self.id);
            if running.is_empty() {
                self.idle.notify_waiters();
            }
        }
    }
}
