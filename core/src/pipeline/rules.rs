//! Compiled rules and their evaluation on one record.

use super::model::ModelStage;
use super::value::{to_cel, to_json};
use super::window::WindowSpec;
use crate::CoreError;
use crate::domain::{Endpoint, ModelVersion, Pipeline, Rule, Slug};
use crate::expr::{Expr, evaluate};
use crate::limits::Budgets;
use crate::ports::{Compute, LoadedModel, off_runtime};
use async_trait::async_trait;
use cel::Value;
use serde_json::Value as Json;
use std::ops::Range;
use std::sync::Arc;

/// What rules look up in the pipeline's tenant: reference rows for `enrich` rules, models
/// for `model` rules.
#[async_trait]
pub trait Lookup: Send + Sync {
    /// The row under `key` in `table`, if any.
    async fn lookup(&self, table: &str, key: &str) -> Result<Option<Json>, crate::CoreError>;
    /// The tenant's model `name` at `version`, loaded, with what it takes and gives; `None`
    /// when there is no such version.
    async fn model(&self, name: &str, version: u32) -> Result<Option<LoadedVersion>, CoreError> {
        let _ = (name, version);
        Ok(None)
    }
    /// POSTs `body` to a remote model: its answer, or why there is none (after retries).
    async fn infer(&self, endpoint: &Endpoint, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let _ = (endpoint, body);
        Err("remote models are not reachable from here".into())
    }
}

/// A model version, loaded.
pub type LoadedVersion = (Arc<dyn LoadedModel>, Arc<ModelVersion>);

/// A rule failed on a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Index of the failing rule in the pipeline.
    pub rule: usize,
    /// Why, without the record's content.
    pub message: String,
}

/// What the stateless rules made of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The record to pass on.
    Keep(Json),
    /// A filter dropped it.
    Drop,
}

pub(crate) enum Stage {
    Filter(Expr),
    Map(Vec<(String, Expr)>),
    Enrich {
        table: Slug,
        key: Expr,
        as_field: String,
    },
    Model(Box<ModelStage>),
}

/// A pipeline version, compiled.
pub struct Compiled {
    /// The pipeline version compiled.
    pub version: u32,
    pub(super) before: Vec<(usize, Stage)>,
    /// The window rule, when the pipeline has one.
    pub window: Option<WindowSpec>,
    pub(super) after: Vec<(usize, Stage)>,
    budgets: Budgets,
}

/// Where a batch's expressions run, in whose lane, and where `enrich` rules look rows up.
pub struct Runner<'a> {
    /// Runs the expressions off the async runtime.
    pub compute: &'a dyn Compute,
    /// The lane of the pipeline's tenant.
    pub lane: &'a str,
    /// The tenant's reference rows.
    pub lookup: &'a dyn Lookup,
}

/// Each record's outcome, in the order of the records.
pub type Outcomes = Vec<Result<Outcome, RuleError>>;

/// Records still going through the rules, by their index in the batch.
pub(super) type Live = Vec<(usize, Json)>;
/// Records whose outcome is known, by their index in the batch.
pub(super) type Settled = Vec<(usize, Result<Outcome, RuleError>)>;

impl Compiled {
    /// The budget of expressions that map records (`map` rules, and models' inputs and
    /// outputs).
    pub(super) fn map_budget(&self) -> u64 {
        self.budgets.map
    }

    /// The stages of a parsed pipeline, split at its window rule, each expression to run
    /// within the budget of its rule's kind.
    pub fn new(pipeline: &Pipeline, budgets: Budgets) -> Compiled {
        let mut compiled = Compiled {
            version: pipeline.version,
            before: vec![],
            window: None,
            after: vec![],
            budgets,
        };
        for (i, rule) in pipeline.rules.iter().enumerate() {
            let stage = match rule {
                Rule::Filter { expr } => Stage::Filter(expr.clone()),
                Rule::Map { fields } => Stage::Map(
                    fields
                        .iter()
                        .map(|(name, e)| (name.clone(), e.clone()))
                        .collect(),
                ),
                Rule::Enrich {
                    table,
                    key,
                    as_field,
                } => Stage::Enrich {
                    table: table.clone(),
                    key: key.clone(),
                    as_field: as_field.clone(),
                },
                Rule::Model {
                    model,
                    version,
                    endpoint,
                    inputs,
                    outputs,
                } => Stage::Model(Box::new(ModelStage {
                    registered: model.clone().zip(*version),
                    endpoint: endpoint.clone(),
                    inputs: inputs.clone(),
                    outputs: outputs
                        .iter()
                        .map(|(name, e)| (name.clone(), e.clone()))
                        .collect(),
                })),
                Rule::Window { .. } => {
                    compiled.window = WindowSpec::new(i, rule, budgets.window);
                    continue;
                }
            };
            if compiled.window.is_some() {
                compiled.after.push((i, stage));
            } else {
                compiled.before.push((i, stage));
            }
        }
        compiled
    }

    /// Applies the rules before the window (all of them when there is none) to `records`.
    /// Fails only when the work could not be run; a rule failing on a record is that
    /// record's outcome.
    pub async fn apply_all(
        self: &Arc<Self>,
        records: Vec<Json>,
        runner: &Runner<'_>,
    ) -> Result<Outcomes, CoreError> {
        run_all(self, false, records, runner).await
    }

    /// Applies the rules after the window to aggregates.
    pub async fn apply_all_after_window(
        self: &Arc<Self>,
        records: Vec<Json>,
        runner: &Runner<'_>,
    ) -> Result<Outcomes, CoreError> {
        run_all(self, true, records, runner).await
    }

    pub(super) fn stages(&self, after: bool) -> &[(usize, Stage)] {
        if after { &self.after } else { &self.before }
    }

    /// Runs the expression stages `range` over `live` (on a compute thread): the records still
    /// kept, and the outcomes of the others.
    fn evaluate_range(&self, after: bool, range: Range<usize>, live: Live) -> (Live, Settled) {
        let mut kept = Vec::with_capacity(live.len());
        let mut settled = Vec::new();
        'records: for (index, mut record) in live {
            for (i, stage) in &self.stages(after)[range.clone()] {
                match self.evaluate_stage(*i, stage, record) {
                    Ok(Some(next)) => record = next,
                    Ok(None) => {
                        settled.push((index, Ok(Outcome::Drop)));
                        continue 'records;
                    }
                    Err(e) => {
                        settled.push((index, Err(e)));
                        continue 'records;
                    }
                }
            }
            kept.push((index, record));
        }
        (kept, settled)
    }

    /// One `filter` or `map` on one record: the record it becomes, or `None` when dropped.
    fn evaluate_stage(
        &self,
        rule: usize,
        stage: &Stage,
        record: Json,
    ) -> Result<Option<Json>, RuleError> {
        let fail = |message: String| RuleError { rule, message };
        let bound = [("record", to_cel(&record))];
        match stage {
            Stage::Filter(p) => {
                match evaluate(p.metered(), &bound, self.budgets.filter).map_err(fail)? {
                    Value::Bool(true) => Ok(Some(record)),
                    Value::Bool(false) => Ok(None),
                    other => Err(fail(format!(
                        "a filter must be true or false, got {}",
                        kind(&other)
                    ))),
                }
            }
            Stage::Map(fields) => {
                let mut out = serde_json::Map::new();
                for (name, p) in fields {
                    let field = |e: String| fail(format!("field `{name}`: {e}"));
                    let v = evaluate(p.metered(), &bound, self.budgets.map).map_err(field)?;
                    out.insert(name.clone(), to_json(&v).map_err(field)?);
                }
                Ok(Some(Json::Object(out)))
            }
            Stage::Enrich { .. } | Stage::Model(_) => Err(fail("this rule runs on its own".into())),
        }
    }

    /// The key of the `enrich` stage `at` for each of `live` (on a compute thread).
    fn enrich_keys(
        &self,
        after: bool,
        at: usize,
        live: Live,
    ) -> Vec<(usize, Json, Result<String, RuleError>)> {
        let (rule, stage) = &self.stages(after)[at];
        let Stage::Enrich { key, .. } = stage else {
            return Vec::new();
        };
        live.into_iter()
            .map(|(index, record)| {
                let key = enrich_key(*rule, key, &record, self.budgets.enrich);
                (index, record, key)
            })
            .collect()
    }
}

fn enrich_key(rule: usize, key: &Expr, record: &Json, budget: u64) -> Result<String, RuleError> {
    let fail = |message: String| RuleError { rule, message };
    match evaluate(key.metered(), &[("record", to_cel(record))], budget).map_err(fail)? {
        Value::String(s) => Ok(s.to_string()),
        Value::Int(n) => Ok(n.to_string()),
        Value::UInt(n) => Ok(n.to_string()),
        Value::Float(f) if f.fract() == 0.0 => Ok(format!("{}", f as i64)),
        other => Err(fail(format!(
            "an enrich key must be a string or a number, got {}",
            kind(&other)
        ))),
    }
}

/// Runs the stages of one side of the window over `records`: each run of `filter` and `map`
/// rules as one compute job for the whole batch, each `enrich` as a job for its keys and the
/// lookups after it.
async fn run_all(
    compiled: &Arc<Compiled>,
    after: bool,
    records: Vec<Json>,
    runner: &Runner<'_>,
) -> Result<Outcomes, CoreError> {
    let count = compiled.stages(after).len();
    let mut outcomes: Vec<Option<Result<Outcome, RuleError>>> =
        records.iter().map(|_| None).collect();
    let mut live: Live = records.into_iter().enumerate().collect();
    let mut at = 0;
    while at < count && !live.is_empty() {
        let end = compiled.stages(after)[at..]
            .iter()
            .position(|(_, s)| matches!(s, Stage::Enrich { .. } | Stage::Model(_)))
            .map_or(count, |p| at + p);
        let c = compiled.clone();
        if end > at {
            let (kept, settled) = off_runtime(runner.compute, runner.lane, move || {
                c.evaluate_range(after, at..end, live)
            })
            .await?;
            for (index, outcome) in settled {
                outcomes[index] = Some(outcome);
            }
            live = kept;
            at = end;
            continue;
        }
        if let (rule, Stage::Model(_)) = &compiled.stages(after)[at] {
            let (kept, settled) =
                super::model::score(compiled, after, at, *rule, live, runner).await?;
            for (index, outcome) in settled {
                outcomes[index] = Some(outcome);
            }
            live = kept;
            at += 1;
            continue;
        }
        let keyed = off_runtime(runner.compute, runner.lane, move || {
            c.enrich_keys(after, at, live)
        })
        .await?;
        live = Vec::with_capacity(keyed.len());
        let (rule, stage) = &compiled.stages(after)[at];
        let Stage::Enrich {
            table, as_field, ..
        } = stage
        else {
            break;
        };
        for (index, mut record, key) in keyed {
            let fail = |message: String| RuleError {
                rule: *rule,
                message,
            };
            let enriched = match key {
                Ok(key) => enrich(&mut record, runner.lookup, table, &key, as_field)
                    .await
                    .map_err(fail),
                Err(e) => Err(e),
            };
            match enriched {
                Ok(()) => live.push((index, record)),
                Err(e) => outcomes[index] = Some(Err(e)),
            }
        }
        at += 1;
    }
    for (index, record) in live {
        outcomes[index] = Some(Ok(Outcome::Keep(record)));
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Ok(Outcome::Drop)))
        .collect())
}

/// Adds the row under `key` in `table` to `record` as `as_field` (null when there is none).
async fn enrich(
    record: &mut Json,
    lookup: &dyn Lookup,
    table: &Slug,
    key: &str,
    as_field: &str,
) -> Result<(), String> {
    let row = lookup
        .lookup(table.as_str(), key)
        .await
        .map_err(|e| format!("reference lookup failed: {}", e.reason()))?;
    match record {
        Json::Object(fields) => {
            fields.insert(as_field.to_owned(), row.unwrap_or(Json::Null));
            Ok(())
        }
        _ => Err("enrich needs the record to be an object".into()),
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => "a number",
        Value::String(_) => "a string",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Table;

    #[async_trait]
    impl Lookup for Table {
        async fn lookup(&self, table: &str, key: &str) -> Result<Option<Json>, crate::CoreError> {
            Ok((table == "companies" && key == "AAPL").then(|| json!({"name": "Apple"})))
        }
    }

    fn pipeline(rules: Json) -> Arc<Compiled> {
        let rules: Vec<Rule> = serde_json::from_value(rules).unwrap_or_else(|e| panic!("{e}"));
        Arc::new(Compiled::new(
            &Pipeline { version: 3, rules },
            Budgets::default(),
        ))
    }

    async fn apply(p: &Arc<Compiled>, records: Vec<Json>) -> Outcomes {
        let runner = Runner {
            compute: &crate::ports::Inline,
            lane: "test",
            lookup: &Table,
        };
        p.apply_all(records, &runner)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn filter_map_and_enrich_run_in_order() {
        let p = pipeline(json!([
            {"type": "filter", "expr": "record.price > 100.0"},
            {"type": "enrich", "table": "companies", "key": "record.sym", "as": "company"},
            {"type": "map", "fields": {"symbol": "record.sym", "usd": "record.price * 2.0", "name": "record.company.name"}}
        ]));
        let out = apply(
            &p,
            vec![
                json!({"sym": "AAPL", "price": 150}),
                json!({"sym": "AAPL", "price": 99.5}),
                json!({"sym": "MSFT", "price": 101}),
            ],
        )
        .await;
        assert_eq!(
            out,
            vec![
                Ok(Outcome::Keep(
                    json!({"symbol": "AAPL", "usd": 300, "name": "Apple"})
                )),
                Ok(Outcome::Drop),
                Err(RuleError {
                    rule: 2,
                    // No company was found for MSFT: `record.company` is null.
                    message: "field `name`: found no matching overload for '_._' applied to '(null_type, string)'".into()
                }),
            ]
        );
    }

    #[tokio::test]
    async fn a_runtime_failure_names_the_rule() {
        let p = pipeline(json!([
            {"type": "filter", "expr": "true"},
            {"type": "map", "fields": {"x": "record.missing * 2.0"}}
        ]));
        let err = apply(&p, vec![json!({"sym": "AAPL"})]).await;
        assert_eq!(err[0].as_ref().err().map(|e| e.rule), Some(1));
        let typed = pipeline(json!([{"type": "filter", "expr": "record.sym"}]));
        let msg = apply(&typed, vec![json!({"sym": "AAPL"})]).await;
        assert_eq!(
            msg[0].as_ref().err().map(|e| e.message.as_str()),
            Some("a filter must be true or false, got a string")
        );
    }

    #[tokio::test]
    async fn a_record_over_the_budget_fails_alone() {
        let p = pipeline(json!([
            {"type": "filter", "expr": "record.items.all(a, record.items.all(b, record.items.all(c, a + b + c >= 0)))"}
        ]));
        let big: Vec<u32> = (0..100).collect();
        let out = apply(&p, vec![json!({"items": big}), json!({"items": [1, 2]})]).await;
        let over = out[0]
            .as_ref()
            .err()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(over.contains(crate::expr::OVER_BUDGET), "{over}");
        assert_eq!(out[1], Ok(Outcome::Keep(json!({"items": [1, 2]}))));
    }
}
