//! Retention: what has expired is removed, in both shapes (the local loop runs it every ten
//! minutes; the aws schedule's retention rule, daily). Records expire by their own
//! `expires_at` (the source's retention); the delivery log and feed errors after
//! `log_retention`; idempotency keys after a day.

use wharf_core::{CoreError, Services};

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Raw and output records.
    pub records: usize,
    /// Delivery log entries.
    pub attempts: usize,
    /// Feed errors.
    pub errors: usize,
    /// Idempotency keys.
    pub keys: usize,
}

/// Removes what has expired now.
pub async fn sweep(services: &Services) -> Result<Swept, CoreError> {
    let now = services.clock.now();
    let records = services.store.expire_records(now).await?;
    let keys = services
        .store
        .expire_idempotency(now - wharf_core::ports::IDEMPOTENCY_KEPT)
        .await?;
    // A retention too long to subtract from now keeps everything.
    let cut = time::Duration::try_from(services.settings.log_retention)
        .ok()
        .and_then(|keep| now.checked_sub(keep));
    let Some(cut) = cut else {
        return Ok(Swept {
            records,
            keys,
            ..Swept::default()
        });
    };
    Ok(Swept {
        records,
        attempts: services.store.expire_attempts(cut).await?,
        errors: services.store.expire_feed_errors(cut).await?,
        keys,
    })
}
