//! Pipelines: the rules a feed runs its source's records through. A pipeline arrives as
//! [`PipelineSpec`] (expressions as text) and is parsed once, when it is saved, into typed
//! [`Rule`]s (checked CEL programs, window intervals, table names); every error is reported
//! with the rule and field it concerns. Stored pipelines are made of parsed rules only, so
//! nothing downstream handles a pipeline that does not compile.

use super::is_slug;
use crate::FieldError;
use crate::expr::{Aggregate, Expr};
use crate::limits::Budgets;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A length of time written like `30s`, `10m`, `2h` or `1d`, kept as written.
#[derive(Clone, PartialEq, Eq)]
pub struct Interval {
    text: String,
    duration: Duration,
}

impl Interval {
    /// Parses `30s`, `10m`, `2h`, `1d` (more than zero).
    pub fn parse(text: &str) -> Result<Interval, String> {
        let bad = || format!("`{text}` is not a duration like 30s, 10m, 2h or 1d");
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = text.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => n,
            "m" => n.checked_mul(60).ok_or_else(bad)?,
            "h" => n.checked_mul(3600).ok_or_else(bad)?,
            "d" => n.checked_mul(86_400).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        if secs == 0 {
            return Err(format!("`{text}` must be longer than zero"));
        }
        Ok(Interval {
            text: text.to_owned(),
            duration: Duration::from_secs(secs),
        })
    }

    /// The length of time.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interval({})", self.text)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Interval {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^[0-9]+[smhd]$"))
            .examples([serde_json::json!("10m")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Interval {}

/// A machine name: `[a-z0-9_-]`, 1 to 64 characters (reference tables).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    /// Parses a slug.
    pub fn parse(value: &str) -> Result<Slug, String> {
        if is_slug(value) {
            Ok(Slug(value.to_owned()))
        } else {
            Err("must match [a-z0-9_-]{1,64}".into())
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_value!(Interval, Slug);

/// One rule as sent and shown: expressions as CEL text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Rule))]
pub enum RuleSpec {
    /// Keeps the records for which `expr` is true.
    Filter {
        /// CEL over `record`, e.g. `record.price > 100.0`.
        expr: String,
    },
    /// Replaces the record by an object with one field per entry.
    Map {
        /// Output field → CEL expression over `record`.
        fields: BTreeMap<String, String>,
    },
    /// Adds the reference row found under `key` in `table` as field `as`.
    Enrich {
        /// Reference table name.
        table: String,
        /// CEL expression giving the key.
        key: String,
        /// Output field name.
        #[serde(rename = "as")]
        as_field: String,
    },
    /// Aggregates the records of each window on a schedule.
    Window {
        /// How often the window is evaluated, e.g. `10m`.
        every: String,
        /// How far back each evaluation looks, e.g. `10m`.
        window: String,
        /// Optional CEL expression grouping records.
        group_by: Option<String>,
        /// Output field → aggregate expression (`count()`, `sum(…)`, `avg(…)`, `min(…)`, `max(…)`, `last(…)`).
        aggregates: BTreeMap<String, String>,
        /// Optional CEL over the aggregate fields; groups where it is false are dropped.
        having: Option<String>,
    },
    /// Inference over the records in batches: a registered ONNX model, or a remote one.
    Model {
        /// The vendor's model (`PUT /v1/models/{name}`); exclusive with `endpoint`.
        model: Option<String>,
        /// The version to run; omitted, the latest when the pipeline is saved (then stored).
        version: Option<u32>,
        /// A remote model answering over HTTP; exclusive with `model`.
        endpoint: Option<super::EndpointSpec>,
        /// Model input → CEL over `record` giving the row's values: a list of numbers, as
        /// many as the input takes per row (nested lists are flattened).
        inputs: BTreeMap<String, String>,
        /// Record field → CEL over `outputs` (each model output as the row's list of values)
        /// and `record`; written into the record for the rules after.
        outputs: BTreeMap<String, String>,
    },
}

/// One rule of a pipeline, parsed. Serialized as its [`RuleSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Keeps the records for which `expr` is true.
    Filter {
        /// Over `record`.
        expr: Expr,
    },
    /// Replaces the record by an object with one field per entry.
    Map {
        /// Output field → expression over `record`.
        fields: BTreeMap<String, Expr>,
    },
    /// Adds the reference row found under `key` in `table` as field `as`.
    Enrich {
        /// Reference table.
        table: Slug,
        /// The key, over `record`.
        key: Expr,
        /// Output field name.
        #[serde(rename = "as")]
        as_field: String,
    },
    /// Aggregates the records of each window on a schedule.
    Window {
        /// How often a window closes.
        every: Interval,
        /// How far back each window reaches.
        window: Interval,
        /// Groups records, over `record`.
        group_by: Option<Expr>,
        /// Output field → aggregate.
        aggregates: BTreeMap<String, Aggregate>,
        /// Over the aggregate fields (and `group`); groups where it is false are dropped.
        having: Option<Expr>,
    },
    /// Inference with a registered model or a remote one.
    Model {
        /// The registered model's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// Its version (pinned when the pipeline was saved).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        /// The remote model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<super::Endpoint>,
        /// Model input → the row's values, over `record`.
        inputs: BTreeMap<String, Expr>,
        /// Record field → value, over `outputs` and `record`.
        outputs: BTreeMap<String, Expr>,
    },
}

impl Rule {
    /// Whether the rule runs on a schedule rather than on every record.
    pub fn is_stateful(&self) -> bool {
        matches!(self, Rule::Window { .. })
    }
}

/// A versioned list of parsed rules. Output records carry the version that made them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pipeline {
    /// Starts at 1 and grows by one on each `PUT /v1/feeds/{id}/pipeline`.
    pub version: u32,
    /// Rules applied in order.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<RuleSpec>))]
    pub rules: Vec<Rule>,
}

/// The body of `PUT /v1/feeds/{id}/pipeline`, and the pipeline inside a new feed.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"rules": [
    {"type": "filter", "expr": "record.price > 100.0"},
    {"type": "map", "fields": {"symbol": "record.sym", "usd": "record.px * 1.08"}}
]})))]
pub struct PipelineSpec {
    /// Rules applied in order.
    pub rules: Vec<RuleSpec>,
}

const MAX_RULES: usize = 50;
/// Shortest and longest window interval.
const WINDOW_BOUNDS: (u64, u64) = (1, 31 * 86_400);

/// Collects the errors of one pipeline, each at `{prefix}rules[i].{field}`.
struct Parsing<'a> {
    prefix: &'a str,
    budgets: &'a Budgets,
    errors: Vec<FieldError>,
}

impl Parsing<'_> {
    fn fail(&mut self, i: usize, field: &str, message: impl Into<String>) {
        let path = format!("{}rules[{i}].{field}", self.prefix);
        self.errors.push(FieldError::new(path, message));
    }

    fn expr(&mut self, i: usize, field: &str, source: &str, budget: u64) -> Option<Expr> {
        Expr::parse_within(source, budget)
            .map_err(|e| self.fail(i, field, e))
            .ok()
    }

    fn interval(&mut self, i: usize, field: &str, text: &str) -> Option<Interval> {
        match Interval::parse(text) {
            Err(e) => self.fail(i, field, e),
            Ok(d) if !(WINDOW_BOUNDS.0..=WINDOW_BOUNDS.1).contains(&d.duration().as_secs()) => {
                self.fail(i, field, "must be between 1s and 31d")
            }
            Ok(d) => return Some(d),
        }
        None
    }

    fn rule(&mut self, i: usize, spec: &RuleSpec) -> Option<Rule> {
        match spec {
            RuleSpec::Filter { expr } => Some(Rule::Filter {
                expr: self.expr(i, "expr", expr, self.budgets.filter)?,
            }),
            RuleSpec::Map { fields } => {
                if fields.is_empty() {
                    self.fail(i, "fields", "needs at least one field");
                }
                let parsed: BTreeMap<String, Option<Expr>> = fields
                    .iter()
                    .map(|(name, e)| {
                        let field = format!("fields.{name}");
                        (name.clone(), self.expr(i, &field, e, self.budgets.map))
                    })
                    .collect();
                let fields = parsed
                    .into_iter()
                    .map(|(name, e)| e.map(|e| (name, e)))
                    .collect::<Option<_>>()?;
                Some(Rule::Map { fields })
            }
            RuleSpec::Enrich {
                table,
                key,
                as_field,
            } => self.enrich(i, table, key, as_field),
            RuleSpec::Window {
                every,
                window,
                group_by,
                aggregates,
                having,
            } => self.window(i, [every, window], group_by, aggregates, having),
            RuleSpec::Model {
                model,
                version,
                endpoint,
                inputs,
                outputs,
            } => self.model(
                i,
                (model.as_deref(), *version, endpoint.as_ref()),
                inputs,
                outputs,
            ),
        }
    }

    fn enrich(&mut self, i: usize, table: &str, key: &str, as_field: &str) -> Option<Rule> {
        let table = Slug::parse(table)
            .map_err(|e| self.fail(i, "table", e))
            .ok();
        if as_field.is_empty() || as_field.len() > 64 {
            self.fail(i, "as", "must be 1 to 64 characters");
        }
        let key = self.expr(i, "key", key, self.budgets.enrich);
        Some(Rule::Enrich {
            table: table?,
            key: key?,
            as_field: as_field.to_owned(),
        })
    }

    /// A model rule with its expressions parsed; a registered model without a version is
    /// pinned by the catalog when it checks the rule against the registry, and a remote
    /// model's secret sealed by it.
    fn model(
        &mut self,
        i: usize,
        (model, version, endpoint): (Option<&str>, Option<u32>, Option<&super::EndpointSpec>),
        inputs: &BTreeMap<String, String>,
        outputs: &BTreeMap<String, String>,
    ) -> Option<Rule> {
        match (model, endpoint) {
            (Some(model), None) if !is_slug(model) => {
                self.fail(i, "model", "must match [a-z0-9_-]{1,64}")
            }
            (Some(_), None) => {}
            (None, Some(_)) if version.is_some() => {
                self.fail(i, "version", "a remote model has no version here")
            }
            (None, Some(_)) => {}
            _ => self.fail(
                i,
                "model",
                "name a registered `model` or a remote `endpoint`, one of them",
            ),
        }
        if version == Some(0) {
            self.fail(i, "version", "versions start at 1");
        }
        let endpoint = endpoint.and_then(|spec| {
            let prefix = format!("{}rules[{i}].endpoint.", self.prefix);
            let mut problems = crate::error::Problems::default();
            let parsed = spec.parse(&|field| format!("{prefix}{field}"), &mut problems);
            self.errors.extend(problems.into_errors());
            parsed
        });
        for (field, map) in [("inputs", inputs), ("outputs", outputs)] {
            if map.is_empty() {
                self.fail(i, field, "needs at least one entry");
            }
        }
        let mut parse_all = |field: &str, map: &BTreeMap<String, String>| {
            let parsed: BTreeMap<String, Option<Expr>> = map
                .iter()
                .map(|(name, e)| {
                    let path = format!("{field}.{name}");
                    (name.clone(), self.expr(i, &path, e, self.budgets.map))
                })
                .collect();
            parsed
                .into_iter()
                .map(|(name, e)| e.map(|e| (name, e)))
                .collect::<Option<BTreeMap<_, _>>>()
        };
        let inputs = parse_all("inputs", inputs);
        let outputs = parse_all("outputs", outputs);
        Some(Rule::Model {
            model: model.map(str::to_owned),
            version,
            endpoint,
            inputs: inputs?,
            outputs: outputs?,
        })
    }

    fn window(
        &mut self,
        i: usize,
        [every, window]: [&String; 2],
        group_by: &Option<String>,
        aggregates: &BTreeMap<String, String>,
        having: &Option<String>,
    ) -> Option<Rule> {
        let every = self.interval(i, "every", every);
        let window = self.interval(i, "window", window);
        let budget = self.budgets.window;
        let group_by = group_by
            .as_deref()
            .map(|g| self.expr(i, "group_by", g, budget));
        if aggregates.is_empty() {
            self.fail(i, "aggregates", "needs at least one aggregate");
        }
        let parsed: BTreeMap<String, Option<Aggregate>> = aggregates
            .iter()
            .map(|(name, source)| {
                let parsed = Aggregate::parse_within(source, budget)
                    .map_err(|e| self.fail(i, &format!("aggregates.{name}"), e))
                    .ok();
                (name.clone(), parsed)
            })
            .collect();
        let having = having.as_deref().map(|h| self.expr(i, "having", h, budget));
        Some(Rule::Window {
            every: every?,
            window: window?,
            group_by: group_by.map(|g| g.ok_or(())).transpose().ok()?,
            aggregates: parsed
                .into_iter()
                .map(|(name, a)| a.map(|a| (name, a)))
                .collect::<Option<_>>()?,
            having: having.map(|h| h.ok_or(())).transpose().ok()?,
        })
    }
}

impl PipelineSpec {
    /// Parses every rule; on failure, every error, each at `{prefix}rules[i]…` with the
    /// position in the expression. An expression whose worst case, as far as it is known
    /// before a record is seen, is over the budget of its rule's kind is refused.
    pub fn parse(&self, prefix: &str, budgets: &Budgets) -> Result<Vec<Rule>, Vec<FieldError>> {
        let mut parsing = Parsing {
            prefix,
            budgets,
            errors: Vec::new(),
        };
        if self.rules.len() > MAX_RULES {
            parsing.errors.push(FieldError::new(
                format!("{prefix}rules"),
                format!("at most {MAX_RULES} rules"),
            ));
        }
        let rules: Vec<Option<Rule>> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, spec)| parsing.rule(i, spec))
            .collect();
        if self
            .rules
            .iter()
            .filter(|r| matches!(r, RuleSpec::Window { .. }))
            .count()
            > 1
        {
            parsing.errors.push(FieldError::new(
                format!("{prefix}rules"),
                "at most one window rule per pipeline",
            ));
        }
        match rules.into_iter().collect::<Option<Vec<Rule>>>() {
            Some(rules) if parsing.errors.is_empty() => Ok(rules),
            _ => Err(parsing.errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_with_units_and_keep_their_text() {
        let ten = Interval::parse("10m").map(|i| (i.duration(), i.as_str().to_owned()));
        assert_eq!(ten, Ok((Duration::from_secs(600), "10m".to_owned())));
        assert_eq!(
            Interval::parse("1d").map(|i| i.duration()),
            Ok(Duration::from_secs(86_400))
        );
        for bad in ["", "10", "m", "0s", "1.5h", "-1m", "10 m"] {
            assert!(Interval::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn errors(rules: serde_json::Value) -> Vec<String> {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({ "rules": rules }))
            .unwrap_or_else(|e| panic!("{e}"));
        match spec.parse("pipeline.", &Budgets::default()) {
            Ok(_) => vec![],
            Err(errors) => errors.into_iter().map(|e| e.path).collect(),
        }
    }

    #[test]
    fn every_error_points_at_its_rule_and_field() {
        assert_eq!(
            errors(serde_json::json!([
                {"type": "filter", "expr": "record.x > 1"},
                {"type": "map", "fields": {"a": "record.("}},
                {"type": "enrich", "table": "Bad Table", "key": "record.k >", "as": ""},
                {"type": "window", "every": "0s", "window": "10m", "aggregates": {"n": "record.x"}}
            ])),
            vec![
                "pipeline.rules[1].fields.a",
                "pipeline.rules[2].table",
                "pipeline.rules[2].as",
                "pipeline.rules[2].key",
                "pipeline.rules[3].every",
                "pipeline.rules[3].aggregates.n",
            ]
        );
    }

    #[test]
    fn a_parsed_pipeline_serializes_as_it_was_sent() {
        let sent = serde_json::json!([
            {"type": "filter", "expr": "record.x > 1"},
            {"type": "enrich", "table": "companies", "key": "record.sym", "as": "company"},
            {"type": "window", "every": "10m", "window": "1h", "group_by": "record.sym",
             "aggregates": {"vwap": "sum(record.px*record.qty)/sum(record.qty)"}, "having": null}
        ]);
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({ "rules": sent }))
            .unwrap_or_else(|e| panic!("{e}"));
        let rules = spec
            .parse("", &Budgets::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(serde_json::to_value(&rules).ok(), Some(sent.clone()));
        let back: Vec<Rule> = serde_json::from_value(sent).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, rules);
    }
}
