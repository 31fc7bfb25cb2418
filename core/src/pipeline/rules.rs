//! Compiled rules and their evaluation on one record.

use super::value::{to_cel, to_json};
use super::window::WindowSpec;
use crate::domain::{Pipeline, Rule, Slug};
use crate::expr::Expr;
use async_trait::async_trait;
use cel::{Context, Env, IdedExpr, Value};
use serde_json::Value as Json;
use std::sync::{Arc, OnceLock};

/// Looks reference rows up for `enrich` rules.
#[async_trait]
pub trait Lookup: Send + Sync {
    /// The row under `key` in `table`, if any.
    async fn lookup(&self, table: &str, key: &str) -> Result<Option<Json>, crate::CoreError>;
}

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

pub(super) enum Stage {
    Filter(Expr),
    Map(Vec<(String, Expr)>),
    Enrich {
        table: Slug,
        key: Expr,
        as_field: String,
    },
}

/// A pipeline version, compiled.
pub struct Compiled {
    /// The pipeline version compiled.
    pub version: u32,
    pub(super) before: Vec<(usize, Stage)>,
    /// The window rule, when the pipeline has one.
    pub window: Option<WindowSpec>,
    pub(super) after: Vec<(usize, Stage)>,
}

pub(super) fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// Evaluates `node` (a program's whole tree, or a part of one) with `bindings` bound.
pub(super) fn eval(node: &IdedExpr, bindings: &[(&str, Value)]) -> Result<Value, String> {
    let mut ctx = Context::with_env(env());
    for (name, value) in bindings {
        ctx.add_variable_from_value(*name, value.clone());
    }
    Value::resolve(node, &ctx).map_err(|e| e.to_string())
}

impl Compiled {
    /// The stages of a parsed pipeline, split at its window rule.
    pub fn new(pipeline: &Pipeline) -> Compiled {
        let mut compiled = Compiled {
            version: pipeline.version,
            before: vec![],
            window: None,
            after: vec![],
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
                Rule::Window { .. } => {
                    compiled.window = WindowSpec::new(i, rule);
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

    /// Applies the rules before the window (all of them when there is none).
    pub async fn apply(&self, record: Json, lookup: &dyn Lookup) -> Result<Outcome, RuleError> {
        run(&self.before, record, lookup).await
    }

    /// Applies the rules after the window to one aggregate.
    pub async fn apply_after_window(
        &self,
        record: Json,
        lookup: &dyn Lookup,
    ) -> Result<Outcome, RuleError> {
        run(&self.after, record, lookup).await
    }
}

async fn run(
    stages: &[(usize, Stage)],
    mut record: Json,
    lookup: &dyn Lookup,
) -> Result<Outcome, RuleError> {
    for (i, stage) in stages {
        let fail = |message: String| RuleError { rule: *i, message };
        let bound = [("record", to_cel(&record))];
        match stage {
            Stage::Filter(p) => match eval(p.node(), &bound).map_err(fail)? {
                Value::Bool(true) => {}
                Value::Bool(false) => return Ok(Outcome::Drop),
                other => {
                    return Err(fail(format!(
                        "a filter must be true or false, got {}",
                        kind(&other)
                    )));
                }
            },
            Stage::Map(fields) => {
                let mut out = serde_json::Map::new();
                for (name, p) in fields {
                    let v =
                        eval(p.node(), &bound).map_err(|e| fail(format!("field `{name}`: {e}")))?;
                    out.insert(
                        name.clone(),
                        to_json(&v).map_err(|e| fail(format!("field `{name}`: {e}")))?,
                    );
                }
                record = Json::Object(out);
            }
            Stage::Enrich {
                table,
                key,
                as_field,
            } => {
                let key = match eval(key.node(), &bound).map_err(fail)? {
                    Value::String(s) => s.to_string(),
                    Value::Int(n) => n.to_string(),
                    Value::UInt(n) => n.to_string(),
                    Value::Float(f) if f.fract() == 0.0 => format!("{}", f as i64),
                    other => {
                        return Err(fail(format!(
                            "an enrich key must be a string or a number, got {}",
                            kind(&other)
                        )));
                    }
                };
                let row = lookup
                    .lookup(table.as_str(), &key)
                    .await
                    .map_err(|e| fail(format!("reference lookup failed: {}", e.reason())))?;
                match &mut record {
                    Json::Object(fields) => {
                        fields.insert(as_field.clone(), row.unwrap_or(Json::Null));
                    }
                    _ => return Err(fail("enrich needs the record to be an object".into())),
                }
            }
        }
    }
    Ok(Outcome::Keep(record))
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

    fn pipeline(rules: Json) -> Compiled {
        let rules: Vec<Rule> = serde_json::from_value(rules).unwrap_or_else(|e| panic!("{e}"));
        Compiled::new(&Pipeline { version: 3, rules })
    }

    #[tokio::test]
    async fn filter_map_and_enrich_run_in_order() {
        let p = pipeline(json!([
            {"type": "filter", "expr": "record.price > 100.0"},
            {"type": "enrich", "table": "companies", "key": "record.sym", "as": "company"},
            {"type": "map", "fields": {"symbol": "record.sym", "usd": "record.price * 2.0", "name": "record.company.name"}}
        ]));
        let out = p.apply(json!({"sym": "AAPL", "price": 150}), &Table).await;
        assert_eq!(
            out,
            Ok(Outcome::Keep(
                json!({"symbol": "AAPL", "usd": 300, "name": "Apple"})
            ))
        );
        assert_eq!(
            p.apply(json!({"sym": "AAPL", "price": 99.5}), &Table).await,
            Ok(Outcome::Drop)
        );
    }

    #[tokio::test]
    async fn a_runtime_failure_names_the_rule() {
        let p = pipeline(json!([
            {"type": "filter", "expr": "true"},
            {"type": "map", "fields": {"x": "record.missing * 2.0"}}
        ]));
        let err = p
            .apply(json!({"sym": "AAPL"}), &Table)
            .await
            .err()
            .map(|e| e.rule);
        assert_eq!(err, Some(1));
        let typed = pipeline(json!([{"type": "filter", "expr": "record.sym"}]));
        let msg = typed
            .apply(json!({"sym": "AAPL"}), &Table)
            .await
            .err()
            .map(|e| e.message);
        assert_eq!(
            msg,
            Some("a filter must be true or false, got a string".into())
        );
    }
}
