//! Window rules: records are grouped and folded into accumulators as they are read, then
//! each group becomes one aggregate record when the window closes.

use super::rules::{RuleError, kind};
use super::value::{to_cel, to_json};
use crate::domain::Rule;
use crate::expr::{Aggregate, AggregateFn, Expr, evaluate};
use cel::Value;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::Duration;

enum Acc {
    Count(u64),
    Sum(f64),
    Avg(f64, u64),
    Min(Option<f64>),
    Max(Option<f64>),
    Last(Json),
}

/// A compiled `window` rule.
pub struct WindowSpec {
    /// Index of the rule in the pipeline.
    pub rule: usize,
    /// How often windows close.
    pub every: Duration,
    /// How long each window is.
    pub window: Duration,
    group_by: Option<Expr>,
    aggregates: Vec<(String, Aggregate)>,
    having: Option<Expr>,
    budget: u64,
}

/// The groups of one window, being folded.
#[derive(Default)]
pub struct Accumulated {
    groups: BTreeMap<String, (Json, Vec<Vec<Acc>>)>,
}

impl Accumulated {
    /// Number of groups so far.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether no record was folded in.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl WindowSpec {
    /// The window of `rule`, the pipeline's rule number `index`; `None` for another rule.
    pub(super) fn new(index: usize, rule: &Rule, budget: u64) -> Option<WindowSpec> {
        let Rule::Window {
            every,
            window,
            group_by,
            aggregates,
            having,
        } = rule
        else {
            return None;
        };
        Some(WindowSpec {
            rule: index,
            every: every.duration(),
            window: window.duration(),
            group_by: group_by.clone(),
            aggregates: aggregates
                .iter()
                .map(|(name, a)| (name.clone(), a.clone()))
                .collect(),
            having: having.clone(),
            budget,
        })
    }

    /// Folds one record (already through the rules before the window) into its group.
    pub fn accumulate(&self, acc: &mut Accumulated, record: &Json) -> Result<(), RuleError> {
        let fail = |message: String| RuleError {
            rule: self.rule,
            message,
        };
        let bound = [("record", to_cel(record))];
        let group = match &self.group_by {
            Some(p) => to_json(
                &evaluate(p.metered(), &bound, self.budget)
                    .map_err(|e| fail(format!("group_by: {e}")))?,
            )
            .map_err(fail)?,
            None => Json::Null,
        };
        let key = group.to_string();
        if !acc.groups.contains_key(&key) {
            let fresh = self
                .aggregates
                .iter()
                .map(|(_, a)| {
                    a.calls
                        .iter()
                        .map(|call| match call.function {
                            AggregateFn::Count => Acc::Count(0),
                            AggregateFn::Sum => Acc::Sum(0.0),
                            AggregateFn::Avg => Acc::Avg(0.0, 0),
                            AggregateFn::Min => Acc::Min(None),
                            AggregateFn::Max => Acc::Max(None),
                            AggregateFn::Last => Acc::Last(Json::Null),
                        })
                        .collect()
                })
                .collect();
            acc.groups.insert(key.clone(), (group, fresh));
        }
        let Some((_, accs)) = acc.groups.get_mut(&key) else {
            return Ok(());
        };
        for ((name, aggregate), slots) in self.aggregates.iter().zip(accs.iter_mut()) {
            for (call, slot) in aggregate.calls.iter().zip(slots.iter_mut()) {
                let function = call.function.name();
                let value = match &call.argument {
                    Some(p) => evaluate(p, &bound, self.budget)
                        .map_err(|e| fail(format!("aggregate `{name}`: {e}")))?,
                    None => Value::Null,
                };
                let number = || match &value {
                    Value::Float(f) => Ok(*f),
                    Value::Int(i) => Ok(*i as f64),
                    Value::UInt(u) => Ok(*u as f64),
                    other => Err(fail(format!(
                        "aggregate `{name}`: {function}() needs numbers, got {}",
                        kind(other)
                    ))),
                };
                match slot {
                    Acc::Count(n) => *n += 1,
                    Acc::Sum(s) => *s += number()?,
                    Acc::Avg(s, n) => {
                        *s += number()?;
                        *n += 1;
                    }
                    Acc::Min(m) => {
                        let x = number()?;
                        *m = Some(m.map_or(x, |m| m.min(x)));
                    }
                    Acc::Max(m) => {
                        let x = number()?;
                        *m = Some(m.map_or(x, |m| m.max(x)));
                    }
                    Acc::Last(l) => *l = to_json(&value).map_err(fail)?,
                }
            }
        }
        Ok(())
    }

    /// Turns each group into an aggregate record with `window_start`, `window_end`, `group`
    /// (when grouped) and one field per aggregate; groups failing `having` are left out.
    /// Returns (group key, record) pairs in group-key order.
    pub fn finish(
        &self,
        acc: Accumulated,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Json)>, RuleError> {
        let fail = |message: String| RuleError {
            rule: self.rule,
            message,
        };
        let mut out = Vec::new();
        for (key, (group, accs)) in acc.groups {
            let mut record = serde_json::Map::new();
            record.insert("window_start".into(), Json::String(start.into()));
            record.insert("window_end".into(), Json::String(end.into()));
            if self.group_by.is_some() {
                record.insert("group".into(), group.clone());
            }
            let mut named = Vec::new();
            for ((name, aggregate), slots) in self.aggregates.iter().zip(accs) {
                let bindings: Vec<(String, Value)> = slots
                    .into_iter()
                    .enumerate()
                    .map(|(i, slot)| {
                        let v = match slot {
                            Acc::Count(n) => Value::Float(n as f64),
                            Acc::Sum(s) => Value::Float(s),
                            Acc::Avg(_, 0) => Value::Null,
                            Acc::Avg(s, n) => Value::Float(s / n as f64),
                            Acc::Min(m) | Acc::Max(m) => m.map(Value::Float).unwrap_or(Value::Null),
                            Acc::Last(j) => to_cel(&j),
                        };
                        (format!("__agg{i}"), v)
                    })
                    .collect();
                let bound: Vec<(&str, Value)> = bindings
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.clone()))
                    .collect();
                let value = evaluate(&aggregate.outer, &bound, self.budget)
                    .map_err(|e| fail(format!("aggregate `{name}`: {e}")))?;
                record.insert(name.clone(), to_json(&value).map_err(fail)?);
                named.push((name.clone(), value));
            }
            if let Some(having) = &self.having {
                let mut bound: Vec<(&str, Value)> =
                    named.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
                let group_value = to_cel(&group);
                bound.push(("group", group_value));
                match evaluate(having.metered(), &bound, self.budget)
                    .map_err(|e| fail(format!("having: {e}")))?
                {
                    Value::Bool(true) => {}
                    Value::Bool(false) => continue,
                    other => {
                        return Err(fail(format!(
                            "having must be true or false, got {}",
                            kind(&other)
                        )));
                    }
                }
            }
            out.push((key, Json::Object(record)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_are_folded_and_having_filters_them() {
        let rule: Rule = serde_json::from_value(json!({"type": "window", "every": "1m", "window": "1m", "group_by": "record.sym",
            "aggregates": {"n": "count()", "vwap": "sum(record.px*record.qty)/sum(record.qty)", "hi": "max(record.px)", "last": "last(record.px)"},
            "having": "n > 1.0"}))
        .unwrap_or_else(|e| panic!("{e}"));
        let spec = WindowSpec::new(2, &rule, 100_000).unwrap_or_else(|| panic!("a window rule"));
        let mut acc = Accumulated::default();
        for r in [
            json!({"sym": "A", "px": 10, "qty": 1}),
            json!({"sym": "A", "px": 20, "qty": 3}),
            json!({"sym": "B", "px": 5, "qty": 1}),
        ] {
            spec.accumulate(&mut acc, &r)
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
        let out = spec
            .finish(acc, "s", "e")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].1,
            json!({"window_start": "s", "window_end": "e", "group": "A", "n": 2, "vwap": 17.5, "hi": 20, "last": 20})
        );
    }
}
