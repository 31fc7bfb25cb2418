//! Running pipelines: compiled rules applied to records. Stateless rules (`filter`, `map`,
//! `enrich`) run on each record as it arrives; a `window` rule aggregates the records of a
//! time window on a schedule, and the rules after it run on each aggregate. Expressions are
//! compiled once per pipeline version; a failure on one record is reported with the index of
//! the rule that failed, never hidden.

pub mod aggregate;
mod rules;
pub mod value;
mod window;

pub use rules::{Compiled, Lookup, Outcome, RuleError};
pub use window::{Accumulated, WindowSpec};
