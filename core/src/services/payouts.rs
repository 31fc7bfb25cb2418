//! Paying vendors through Stripe Connect: a vendor admin opens an Express connected account
//! and completes Stripe's onboarding (`payout_account_link`); Stripe's `account.updated`
//! event says when it can receive transfers. On the schedule, each payout of a closed month
//! whose invoices are all paid has its net transferred to the vendor's account, once: the
//! idempotency key derives from the payout id, so a transfer retried after a timeout or an
//! outage lands once (tried again after 5 minutes); a transfer Stripe refuses (funds not
//! available yet, a restricted account) is tried again as a new request 6 hours later.

use super::{Services, StripeEventOutcome};
use crate::domain::{
    InvoiceFilter, InvoiceStatus, Payout, PayoutAccount, PayoutStatus, Principal, Role,
    TransferRequest,
};
use crate::{CoreError, PageRequest, VendorId};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::HashMap;

/// How long a transfer that failed on an outage waits before it is tried again.
const RETRY_AFTER_OUTAGE: time::Duration = time::Duration::minutes(5);
/// How long a transfer Stripe refused waits before it is tried again.
const RETRY_AFTER_REFUSAL: time::Duration = time::Duration::hours(6);

/// Where a vendor admin completes its payout account.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayoutAccountLink {
    /// Stripe's onboarding page for the account (short-lived: ask again for a new one).
    pub url: String,
    /// The vendor's connected account at Stripe.
    pub account_id: String,
    /// Whether onboarding is complete and payouts can be transferred to the account.
    pub payouts_enabled: bool,
}

impl Services {
    /// The onboarding page of the calling vendor's connected account, made on first call.
    pub async fn payout_account_link(
        &self,
        who: &Principal,
    ) -> Result<PayoutAccountLink, CoreError> {
        let vendor = who.tenant_with(Role::VendorAdmin)?;
        let payments = self.payments()?;
        let account = match self.store.payout_account(vendor).await? {
            Some(account) => account,
            None => {
                let key = format!("wharf-account-{vendor}");
                let made = payments.create_connected_account(&key, vendor).await?;
                self.store.put_payout_account(vendor, &made).await?
            }
        };
        let base = self.settings.public_url.trim_end_matches('/');
        let url = payments
            .onboarding_link(
                &format!("wharf-link-{}", uuid::Uuid::now_v7()),
                &account.account,
                &format!("{base}/?payout_account=refresh"),
                &format!("{base}/?payout_account=done"),
            )
            .await?;
        Ok(PayoutAccountLink {
            url,
            account_id: account.account,
            payouts_enabled: account.payouts_enabled,
        })
    }

    /// `account.updated`: records whether the vendor's account can receive payouts, when the
    /// event is about the account Wharf recorded for it.
    pub(super) async fn account_updated(
        &self,
        vendor: &VendorId,
        account: &str,
        enabled: bool,
    ) -> Result<StripeEventOutcome, CoreError> {
        match self.store.payout_account(vendor).await? {
            Some(ours) if ours.account == account => {
                self.store.set_payouts_enabled(vendor, enabled).await?;
                tracing::info!(tenant.id = %vendor, payouts_enabled = enabled, "payout account changed");
                Ok(StripeEventOutcome::Applied)
            }
            _ => {
                tracing::warn!(tenant.id = %vendor, "an account event names an account Wharf did not record for the vendor; ignored");
                Ok(StripeEventOutcome::Ignored)
            }
        }
    }

    /// Moves every payout not transferred yet one step: a statement while the vendor has no
    /// account able to receive it, pending while the month's invoices to the vendor are not
    /// all paid, else transferred (or failed, to be tried again). Answers the transfers made.
    pub(super) async fn pay_vendors(&self) -> Result<usize, CoreError> {
        let mut accounts: HashMap<VendorId, Option<PayoutAccount>> = HashMap::new();
        let mut transferred = 0;
        for payout in self.store.list_payouts(None, None).await? {
            if payout.status == PayoutStatus::Transferred {
                continue;
            }
            if !accounts.contains_key(&payout.vendor_id) {
                let account = self.store.payout_account(&payout.vendor_id).await?;
                accounts.insert(payout.vendor_id.clone(), account);
            }
            let account = accounts
                .get(&payout.vendor_id)
                .and_then(Option::as_ref)
                .filter(|a| a.payouts_enabled);
            let mut next = self.pay(&payout, account).await?;
            if next != payout {
                next.revision = payout.revision + 1;
                match self.store.update_payout(&next).await {
                    Ok(()) => transferred += usize::from(next.status == PayoutStatus::Transferred),
                    // Another tick recorded its own attempt, under the same key.
                    Err(CoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(transferred)
    }

    /// The payout after one step towards the vendor's account.
    async fn pay(
        &self,
        payout: &Payout,
        account: Option<&PayoutAccount>,
    ) -> Result<Payout, CoreError> {
        use rust_decimal::prelude::ToPrimitive;
        let mut next = payout.clone();
        let payable = payout.transferable && payout.net.0 > Decimal::ZERO;
        let Some(account) = account.filter(|_| payable) else {
            next.status = PayoutStatus::Statement;
            return Ok(next);
        };
        let now = self.clock.now();
        if payout.transfer_retry_at.is_some_and(|at| at > now) {
            return Ok(next);
        }
        if !self.all_paid(payout).await? {
            next.status = PayoutStatus::Pending;
            return Ok(next);
        }
        let payments = self.payments()?;
        let scale = Decimal::from(10u64.pow(payout.currency.minor_units()));
        let transfer = TransferRequest {
            account: account.account.clone(),
            amount_minor: (payout.net.0 * scale)
                .to_i64()
                .ok_or_else(|| CoreError::internal(format!("{} is too large", payout.net)))?,
            currency: payout.currency.code().to_owned(),
            payout: payout.id.clone(),
            description: format!("Wharf payout {} ({})", payout.period, payout.id),
        };
        let key = format!("wharf-{}-transfer-{}", payout.id, payout.transfers_refused);
        match payments.transfer(&key, &transfer).await {
            Ok(id) => {
                next.status = PayoutStatus::Transferred;
                next.transfer_id = Some(id);
                next.transfer_error = None;
                next.transfer_retry_at = None;
            }
            Err(e) => {
                tracing::warn!(payout.id = %payout.id, error = %e, "a payout transfer failed; the schedule tries again");
                next.status = PayoutStatus::Failed;
                next.transfer_error = Some(e.to_string());
                // An outage keeps the key (the transfer may have been made) and is tried
                // again soon; a refusal (funds not available yet, an account restricted) is
                // stored by Stripe under its key, so the next attempt, later, needs a new one.
                if matches!(e, CoreError::Unavailable(_)) {
                    next.transfer_retry_at = Some(now + RETRY_AFTER_OUTAGE);
                } else {
                    next.transfers_refused += 1;
                    next.transfer_retry_at = Some(now + RETRY_AFTER_REFUSAL);
                }
            }
        }
        Ok(next)
    }

    /// Whether every invoice the payout sums (its month, vendor and currency) is paid.
    async fn all_paid(&self, payout: &Payout) -> Result<bool, CoreError> {
        let filter = InvoiceFilter {
            period: Some(payout.period.clone()),
            vendor: Some(payout.vendor_id.clone()),
            ..InvoiceFilter::default()
        };
        let mut page = PageRequest::first(crate::page::MAX_LIMIT);
        loop {
            let invoices = self.store.list_invoices(&filter, &page).await?;
            let unpaid = invoices.items.iter().any(|inv| {
                inv.currency == payout.currency
                    && inv.status != InvoiceStatus::Paid
                    && !inv.total.0.is_zero()
            });
            if unpaid {
                return Ok(false);
            }
            match invoices.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(true),
            }
        }
    }
}
