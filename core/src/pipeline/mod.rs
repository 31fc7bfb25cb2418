//! Running pipelines: compiled rules applied to records. Stateless rules (`filter`, `map`,
//! `enrich`) run on each record as it arrives; a `window` rule aggregates the records of a
//! time window on a schedule, and the rules after it run on each aggregate. Expressions are
//! compiled once per pipeline version; a failure on one record is reported with the index of
//! the rule that failed, never hidden.

mod rules;
pub mod value;
mod window;

pub use rules::{Compiled, Lookup, Outcome, RuleError};
pub use window::{Accumulated, WindowSpec};

/// A subscription's filter.
pub struct SubscriptionFilter(crate::expr::Expr);

impl SubscriptionFilter {
    /// The filter of `sub`, if it has one.
    pub fn of(sub: &crate::domain::Subscription) -> Option<Self> {
        sub.filter.clone().map(SubscriptionFilter)
    }

    /// Whether `record` passes `filter` (no filter passes everything).
    pub fn admits(filter: Option<&Self>, record: &serde_json::Value) -> bool {
        filter.is_none_or(|f| f.matches(record))
    }

    /// Whether `record` passes; a filter that fails on a record does not pass it.
    pub fn matches(&self, record: &serde_json::Value) -> bool {
        matches!(
            rules::eval(self.0.node(), &[("record", value::to_cel(record))]),
            Ok(cel::Value::Bool(true))
        )
    }
}
