//! CPU-bound work (tenants' expressions, and models) runs through the [`Compute`] port, off
//! the threads that serve requests and move I/O, with a bounded share per lane: one tenant's
//! expensive rules slow that tenant's lane, never another's.

use crate::CoreError;
use async_trait::async_trait;
use std::sync::{Arc, Mutex, PoisonError};

/// A piece of CPU-bound work.
pub type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs off the async runtime: a bounded number at once overall and one at a time per
/// lane (a tenant's pipeline, a subscriber's filter), waiting lanes taken in turn.
#[async_trait]
pub trait Compute: Send + Sync {
    /// Runs `job` once its lane and the pool have room; answers when it has run.
    async fn run(&self, lane: &str, job: Job) -> Result<(), CoreError>;
}

/// Runs `f` through `compute` in `lane` and answers its result.
pub async fn off_runtime<T: Send + 'static>(
    compute: &dyn Compute,
    lane: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoreError> {
    let slot = Arc::new(Mutex::new(None));
    let filled = slot.clone();
    compute
        .run(
            lane,
            Box::new(move || {
                let value = f();
                *filled.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
            }),
        )
        .await?;
    let value = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    value.ok_or_else(|| CoreError::internal("a compute job ended without its result"))
}

/// The lane of a tenant's pipelines.
pub fn tenant_lane(tenant: &crate::TenantId) -> String {
    format!("tenant:{tenant}")
}

/// The lane of a subscriber's filters.
pub fn subscriber_lane(subscriber: &crate::UserId) -> String {
    format!("subscriber:{subscriber}")
}

/// Runs jobs where they are called: for unit tests of code that needs a [`Compute`].
#[cfg(test)]
pub(crate) struct Inline;

#[cfg(test)]
#[async_trait]
impl Compute for Inline {
    async fn run(&self, _lane: &str, job: Job) -> Result<(), CoreError> {
        job();
        Ok(())
    }
}
