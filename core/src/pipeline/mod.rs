//! Running pipelines: compiled rules applied to records. Stateless rules (`filter`, `map`,
//! `enrich`) run on each record as it arrives; a `window` rule aggregates the records of a
//! time window on a schedule, and the rules after it run on each aggregate. Expressions are
//! compiled once per pipeline version; a failure on one record is reported with the index of
//! the rule that failed, never hidden.

mod model;
mod remote;
mod rules;
pub mod value;
mod window;

pub use rules::{Compiled, LoadedVersion, Lookup, Outcome, Outcomes, RuleError, Runner};
pub use window::{Accumulated, WindowSpec};

/// A subscription's filter, run within the subscription filters' budget.
#[derive(Clone)]
pub struct SubscriptionFilter {
    expr: crate::expr::Expr,
    budget: u64,
}

impl SubscriptionFilter {
    /// The filter of `sub`, if it has one.
    pub fn of(sub: &crate::domain::Subscription, budget: u64) -> Option<Self> {
        sub.filter
            .clone()
            .map(|expr| SubscriptionFilter { expr, budget })
    }

    /// Whether `record` passes `filter` (no filter passes everything). Call it on a compute
    /// thread ([`crate::ports::Compute`]).
    pub fn admits(filter: Option<&Self>, record: &serde_json::Value) -> bool {
        filter.is_none_or(|f| f.matches(record))
    }

    /// Whether `record` passes; a filter that fails on a record (over its budget, too) does
    /// not pass it.
    pub fn matches(&self, record: &serde_json::Value) -> bool {
        matches!(
            crate::expr::evaluate(
                self.expr.metered(),
                &[("record", value::to_cel(record))],
                self.budget
            ),
            Ok(cel::Value::Bool(true))
        )
    }
}
