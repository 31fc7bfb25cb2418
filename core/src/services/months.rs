//! Months closing by themselves: what the schedule of either shape calls.

use super::Services;
use crate::billing::Period;
use crate::domain::{BillingRun, RunStatus};
use crate::{CoreError, PageRequest};

impl Services {
    /// Closes every month that ended `billing_close_delay` ago or more and is not closed
    /// yet, in order: a run that stopped halfway first, then the months after the last one
    /// closed (before any run, from the month of the first subscription). What the schedule
    /// calls; answers the runs this call completed.
    pub async fn close_due_months(&self) -> Result<Vec<BillingRun>, CoreError> {
        let now = self.clock.now();
        let due = |period: Period| period.end() + self.settings.billing_close_delay <= now;
        let runs = self.store.list_billing_runs().await?;
        let mut next = match runs.last() {
            Some(last) => {
                let period = Period::parse(&last.period).map_err(CoreError::internal)?;
                if last.status == RunStatus::Completed {
                    period.next()
                } else {
                    period
                }
            }
            // Before any run: the month of the first subscription (ids follow time), the
            // first that can have anything to bill.
            None => match self
                .store
                .list_all_subscriptions(&PageRequest::first(1))
                .await?
                .items
                .first()
            {
                Some(first) => Period::of(first.created_at),
                None => return Ok(Vec::new()),
            },
        };
        let mut closed = Vec::new();
        while due(next) {
            let (run, new) = self.close_month(next).await?;
            if new {
                tracing::info!(period = %run.period, invoices = run.invoices, problems = run.problems.len(), "month closed");
                closed.push(run);
            }
            next = next.next();
        }
        Ok(closed)
    }
}
