//! Background work shared fairly between tenants: at most one task per key (a tenant's
//! processing, a subscription's retries, a source's poll, a feed's windows), at most
//! `per_tenant` of one tenant's tasks working at once, at most `width` overall. Turns are
//! first come, first served, so a tenant with many slow tasks waits behind its own tasks,
//! while every other tenant's task finds a place among the rest.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use wharf_core::TenantId;

/// Tasks by key, a bounded share per tenant.
pub struct Lanes<K> {
    running: Mutex<HashSet<K>>,
    tenants: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
    pool: Arc<Semaphore>,
    per_tenant: usize,
    idle: Notify,
}

impl<K: Hash + Eq + Clone + Send + 'static> Lanes<K> {
    /// At most `width` tasks working at once, `per_tenant` of them for one tenant.
    pub fn new(width: usize, per_tenant: usize) -> Arc<Lanes<K>> {
        Arc::new(Lanes {
            running: Mutex::default(),
            tenants: Mutex::default(),
            pool: Arc::new(Semaphore::new(width.max(1))),
            per_tenant: per_tenant.max(1),
            idle: Notify::new(),
        })
    }

    /// Whether a task for `key` is running or waiting for its turn.
    pub fn is_running(&self, key: &K) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// Runs `work` for `key` of `tenant` in a task of its own once the tenant and the pool
    /// have room; `None` (and `work` dropped) when a task for `key` is already there.
    pub fn spawn(
        self: &Arc<Self>,
        tenant: &TenantId,
        key: K,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> Option<JoinHandle<()>> {
        if !self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
        {
            return None;
        }
        let share = self.share(tenant);
        let this = self.clone();
        let tenant = tenant.clone();
        Some(tokio::spawn(async move {
            if let (Ok(_turn), Ok(_place)) = (share.acquire().await, this.pool.acquire().await) {
                work.await;
            }
            this.finish(&tenant, &key, share);
        }))
    }

    fn share(&self, tenant: &TenantId) -> Arc<Semaphore> {
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone()
    }

    fn finish(&self, tenant: &TenantId, key: &K, share: Arc<Semaphore>) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and this task's: no other task of the tenant holds or waits.
        if Arc::strong_count(&share) == 2 {
            tenants.remove(tenant);
        }
        drop(tenants);
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.remove(key);
        if running.is_empty() {
            self.idle.notify_waiters();
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn a_tenant_with_stuck_tasks_leaves_room_for_the_others() {
        let lanes = Lanes::new(3, 2);
        let (noisy, quiet) = (TenantId::new(), TenantId::new());
        let mut stuck = Vec::new();
        for key in 0..5 {
            let (release, wait) = oneshot::channel::<()>();
            stuck.push(release);
            assert!(
                lanes
                    .spawn(&noisy, key, async move {
                        let _ = wait.await;
                    })
                    .is_some()
            );
        }
        assert!(
            lanes.spawn(&noisy, 0, async {}).is_none(),
            "one task per key"
        );
        // Two of the noisy tenant's tasks hold its share; the third place is the quiet one's.
        let quiet_task = lanes.spawn(&quiet, 100, async {});
        let finished = match quiet_task {
            Some(task) => tokio::time::timeout(std::time::Duration::from_secs(10), task).await,
            None => panic!("the quiet tenant's task was refused"),
        };
        assert!(
            matches!(finished, Ok(Ok(()))),
            "the quiet task waited behind the noisy ones"
        );
        assert!(
            lanes.is_running(&4),
            "the noisy tenant's other tasks wait for its share"
        );
        drop(stuck);
        lanes.until_idle().await;
        assert!(!lanes.is_running(&0));
    }
}
