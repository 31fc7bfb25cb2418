//! CEL expressions as Wharf uses them, parsed once, when a pipeline or filter is saved: an
//! [`Expr`] is a program that compiled and calls only known functions, so a bad expression
//! is refused with its position instead of failing at run time. An [`Aggregate`] is a window
//! aggregate taken apart on cel's syntax tree; [`conjunction`] reads a filter's simple
//! comparisons off the same tree (what a topic's filter policy can express).
//!
//! Stored pipelines are read back through the same parse. Parsing is cached per process by
//! source text, so reading a feed costs a lookup per expression, not a parse.
//!
//! Every expression runs under an evaluation budget ([`meter`]).

mod meter;

pub use meter::{OVER_BUDGET, evaluate};

use cel::common::ast::{CallExpr, Expr as Node, LiteralValue};
use cel::{IdedExpr, Program};
use meter::meter;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Functions of CEL's standard library (and its standard macros) that rules may call.
const STANDARD_FUNCTIONS: &[&str] = &[
    "size",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "timestamp",
    "duration",
    "type",
    "dyn",
    "max",
    "min",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
];

/// The longest expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;

/// Programs parsed in this process, by source; bounded, as sources are tenants' input.
const CACHE_LIMIT: usize = 8192;

/// A CEL expression that compiled and calls only known functions.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    parsed: Arc<Parsed>,
}

/// An expression's syntax tree (macros expanded), as written and as evaluated.
struct Parsed {
    tree: IdedExpr,
    metered: IdedExpr,
    worst_case: u64,
}

impl Parsed {
    fn of(tree: IdedExpr) -> Parsed {
        let mut metered = tree.clone();
        let worst_case = meter(&mut metered);
        Parsed {
            tree,
            metered,
            worst_case,
        }
    }
}

impl Expr {
    /// Parses and checks `source`; the error names the line and column.
    pub fn parse(source: &str) -> Result<Expr, String> {
        let parsed = cached(source, |s| {
            let program = compile(s)?;
            check_functions(program.expression(), &[])?;
            Ok(Parsed::of(program.expression().clone()))
        })?;
        Ok(Expr {
            source: source.into(),
            parsed,
        })
    }

    /// Parses `source` and refuses it when its worst case, as far as it is known before any
    /// record is seen, takes more than `budget` evaluation steps.
    pub fn parse_within(source: &str, budget: u64) -> Result<Expr, String> {
        let expr = Expr::parse(source)?;
        within(expr.worst_case(), budget)?;
        Ok(expr)
    }

    /// The text the expression was written as.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The same, as every text value of the domain names it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The program's syntax tree (macros expanded), as written.
    pub fn node(&self) -> &IdedExpr {
        &self.parsed.tree
    }

    /// The tree [`evaluate`] runs: the program with its evaluation steps counted.
    pub fn metered(&self) -> &IdedExpr {
        &self.parsed.metered
    }

    /// The evaluation steps of the program's worst case, counting collections whose size
    /// depends on the record as empty: what can be known of its cost when it is saved.
    pub fn worst_case(&self) -> u64 {
        self.parsed.worst_case
    }
}

fn within(worst_case: u64, budget: u64) -> Result<(), String> {
    if worst_case > budget {
        return Err(format!(
            "takes {worst_case} evaluation steps at worst, {OVER_BUDGET} of {budget} steps"
        ));
    }
    Ok(())
}

impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

text_value!(Expr, Aggregate);

/// A parsed program from the process-wide cache, or `parse`'s, cached when it succeeds.
fn cached(
    source: &str,
    parse: impl FnOnce(&str) -> Result<Parsed, String>,
) -> Result<Arc<Parsed>, String> {
    static CACHE: OnceLock<Mutex<HashMap<Arc<str>, Arc<Parsed>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(source)
    {
        return Ok(found.clone());
    }
    let program = Arc::new(parse(source)?);
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(source.into(), program.clone());
    Ok(program)
}

/// Compiles `source`; a syntax error names its line and column.
fn compile(source: &str) -> Result<Program, String> {
    if source.trim().is_empty() {
        return Err("expression is empty".into());
    }
    if source.len() > MAX_EXPR_LEN {
        return Err(format!("expression is longer than {MAX_EXPR_LEN} bytes"));
    }
    Program::compile(source).map_err(|errs| {
        let first = errs.errors.first();
        let (line, column) = first.map(|e| (e.pos.0, e.pos.1 + 1)).unwrap_or((1, 1));
        let msg = first
            .map(|e| e.msg.clone())
            .unwrap_or_else(|| "syntax error".into());
        format!("invalid CEL at line {line}, column {column}: {msg}")
    })
}

/// Refuses calls of functions that are neither standard nor in `extra`.
fn check_functions(expr: &IdedExpr, extra: &[&str]) -> Result<(), String> {
    let refs = expr.references();
    let mut unknown: Vec<&str> = refs
        .functions()
        .into_iter()
        // Operators are functions too (`_+_`, `!_`, `@in`): only named calls are checked.
        .filter(|f| f.starts_with(|c: char| c.is_ascii_alphabetic()) && !f.contains('.'))
        .filter(|f| !STANDARD_FUNCTIONS.contains(f) && !extra.contains(f))
        .collect();
    unknown.sort_unstable();
    match unknown.first() {
        Some(f) => Err(format!("unknown function `{f}`")),
        None => Ok(()),
    }
}

/// An aggregate function of a `window` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    /// Records in the group.
    Count,
    /// Sum of the argument.
    Sum,
    /// Mean of the argument.
    Avg,
    /// Least value of the argument.
    Min,
    /// Greatest value of the argument.
    Max,
    /// The argument of the group's last record.
    Last,
}

impl AggregateFn {
    /// Every aggregate function, by name.
    pub const ALL: [(&'static str, AggregateFn); 6] = [
        ("count", AggregateFn::Count),
        ("sum", AggregateFn::Sum),
        ("avg", AggregateFn::Avg),
        ("min", AggregateFn::Min),
        ("max", AggregateFn::Max),
        ("last", AggregateFn::Last),
    ];

    fn named(name: &str) -> Option<AggregateFn> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The function's name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }
}

/// One aggregate call inside an aggregate expression.
#[derive(Debug, Clone)]
pub struct AggregateCall {
    /// The function.
    pub function: AggregateFn,
    /// Its argument, run per record (metered, for [`evaluate`]); `None` for `count()`.
    pub argument: Option<IdedExpr>,
}

/// A window aggregate such as `sum(record.px*record.qty)/sum(record.qty)`, taken apart: its
/// aggregate calls (each argument a program run per record) and the expression over their
/// results, in which each call is the variable `__aggN`.
#[derive(Clone)]
pub struct Aggregate {
    source: Arc<str>,
    /// The expression over the calls' results (metered, for [`evaluate`]).
    pub outer: IdedExpr,
    /// The calls, in order of appearance.
    pub calls: Vec<AggregateCall>,
    worst_case: u64,
}

impl Aggregate {
    /// Parses an aggregate expression and refuses it when its worst case on one record or on
    /// one group takes more than `budget` steps.
    pub fn parse_within(source: &str, budget: u64) -> Result<Aggregate, String> {
        let aggregate = Aggregate::parse(source)?;
        within(aggregate.worst_case, budget)?;
        Ok(aggregate)
    }

    /// Parses an aggregate expression; the error says what is wrong.
    pub fn parse(source: &str) -> Result<Aggregate, String> {
        let program = compile(source)?;
        let names: Vec<&str> = AggregateFn::ALL.iter().map(|(n, _)| *n).collect();
        check_functions(program.expression(), &names)?;
        let mut outer = program.expression().clone();
        let mut calls = Vec::new();
        lift_calls(&mut outer, &mut calls)?;
        if calls.is_empty() {
            return Err(
                "an aggregate must call count(), sum(), avg(), min(), max() or last()".into(),
            );
        }
        let mut worst_case = meter(&mut outer);
        for call in &mut calls {
            if let Some(argument) = &mut call.argument {
                worst_case = worst_case.max(meter(argument));
            }
        }
        Ok(Aggregate {
            source: source.into(),
            outer,
            calls,
            worst_case,
        })
    }

    /// The text the aggregate was written as.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Aggregate {
    fn eq(&self, other: &Aggregate) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aggregate({:?})", self.source)
    }
}

/// Replaces each aggregate call in `node` (a global call, not a method such as
/// `list.max()`) by the variable `__aggN`, collecting the calls.
fn lift_calls(node: &mut IdedExpr, calls: &mut Vec<AggregateCall>) -> Result<(), String> {
    if let Node::Call(call) = &node.expr
        && call.target.is_none()
        && let Some(function) = AggregateFn::named(&call.func_name)
    {
        let argument = aggregate_argument(function, call)?;
        node.expr = Node::Ident(format!("__agg{}", calls.len()));
        calls.push(AggregateCall { function, argument });
        return Ok(());
    }
    meter::children(node)
        .into_iter()
        .try_for_each(|child| lift_calls(child, calls))
}

fn aggregate_argument(function: AggregateFn, call: &CallExpr) -> Result<Option<IdedExpr>, String> {
    let name = function.name();
    match (function, call.args.as_slice()) {
        (AggregateFn::Count, []) => Ok(None),
        (AggregateFn::Count, _) => Err("count() takes no argument".into()),
        (_, []) => Err(format!("{name}() needs an argument")),
        (_, [argument]) => {
            let mut nested = Vec::new();
            lift_calls(&mut argument.clone(), &mut nested)?;
            if nested.is_empty() {
                Ok(Some(argument.clone()))
            } else {
                Err(format!("the argument of {name}() cannot itself aggregate"))
            }
        }
        _ => Err(format!("{name}() takes one argument")),
    }
}

/// A literal a filter compares a field with.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string without quotes or backslashes.
    Text(String),
    /// An `int` or `double` literal.
    Number(f64),
}

/// How one field of the record is tested.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `==`.
    Eq(Literal),
    /// `!=`.
    Ne(Literal),
    /// `<`, `<=`, `>`, `>=` with a number: the operator as written.
    Order(&'static str, f64),
    /// `in [...]`.
    In(Vec<Literal>),
    /// `.startsWith("…")`.
    Prefix(String),
}

/// One comparison of a record field (`record.a.b`, as `["a", "b"]`) with literals.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The field's path below `record`.
    pub path: Vec<String>,
    /// The test.
    pub test: Test,
}

/// The comparisons a filter is the conjunction (`&&`) of, when it is nothing else: each a
/// field compared with a literal (`==`, `!=`, ordering with numbers), `in` a list of
/// literals, or `startsWith` a string. `None` for any other filter (`||`, negation, other
/// functions, booleans, arithmetic, fields compared with fields).
pub fn conjunction(filter: &Expr) -> Option<Vec<Condition>> {
    let mut conditions = Vec::new();
    collect_conjuncts(filter.node(), &mut conditions)?;
    Some(conditions)
}

fn collect_conjuncts(node: &IdedExpr, out: &mut Vec<Condition>) -> Option<()> {
    let Node::Call(call) = &node.expr else {
        return None;
    };
    if call.func_name == "_&&_" && call.target.is_none() {
        for arg in &call.args {
            collect_conjuncts(arg, out)?;
        }
        return Some(());
    }
    out.push(condition(call)?);
    Some(())
}

fn condition(call: &CallExpr) -> Option<Condition> {
    if call.func_name == "startsWith" {
        let path = field_path(call.target.as_deref()?)?;
        let [arg] = call.args.as_slice() else {
            return None;
        };
        let Literal::Text(prefix) = literal(arg)? else {
            return None;
        };
        return Some(Condition {
            path,
            test: Test::Prefix(prefix),
        });
    }
    let [left, right] = call.args.as_slice() else {
        return None;
    };
    if call.target.is_some() {
        return None;
    }
    let path = field_path(left)?;
    let test = match (call.func_name.as_str(), literal(right)) {
        ("_==_", Some(l)) => Test::Eq(l),
        ("_!=_", Some(l)) => Test::Ne(l),
        (op, Some(Literal::Number(n))) => Test::Order(ordering(op)?, n),
        ("@in", None) => match &right.expr {
            Node::List(list) if !list.elements.is_empty() => {
                Test::In(list.elements.iter().map(literal).collect::<Option<_>>()?)
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(Condition { path, test })
}

fn ordering(op: &str) -> Option<&'static str> {
    Some(match op {
        "_<_" => "<",
        "_<=_" => "<=",
        "_>_" => ">",
        "_>=_" => ">=",
        _ => return None,
    })
}

/// `record.a.b` as `["a", "b"]`.
fn field_path(node: &IdedExpr) -> Option<Vec<String>> {
    let mut path = Vec::new();
    let mut at = node;
    loop {
        match &at.expr {
            Node::Select(select) if !select.test => {
                path.push(select.field.clone());
                at = &select.operand;
            }
            Node::Ident(root) if root == "record" && !path.is_empty() => {
                path.reverse();
                return Some(path);
            }
            _ => return None,
        }
    }
}

fn literal(node: &IdedExpr) -> Option<Literal> {
    match &node.expr {
        Node::Literal(LiteralValue::String(s)) => {
            let text = s.inner();
            (!text.contains(['"', '\\'])).then(|| Literal::Text(text.to_owned()))
        }
        Node::Literal(LiteralValue::Int(i)) => Some(Literal::Number(*i.inner() as f64)),
        Node::Literal(LiteralValue::Double(d)) => Some(Literal::Number(*d.inner())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_expression_parses() {
        let e = Expr::parse("record.price > 100.0 && size(record.sym) > 0");
        assert_eq!(
            e.map(|e| e.source().to_owned()),
            Ok("record.price > 100.0 && size(record.sym) > 0".to_owned())
        );
    }

    #[test]
    fn a_syntax_error_names_its_position() {
        let err = Expr::parse("record.price > > 1").err().unwrap_or_default();
        assert!(err.contains("line 1, column"), "{err}");
    }

    #[test]
    fn operators_are_not_taken_for_unknown_functions() {
        for source in [
            "!(record.x > 1)",
            "-record.x < 0",
            "record.x in [1, 2]",
            "record.a[0] == 1",
        ] {
            assert!(Expr::parse(source).is_ok(), "{source}");
        }
    }

    #[test]
    fn unknown_functions_are_refused_and_aggregates_only_in_aggregates() {
        assert!(Expr::parse("frobnicate(record.x)").is_err());
        assert!(Expr::parse("sum(record.x)").is_err());
        assert!(Aggregate::parse("sum(record.x) / count()").is_ok());
        assert!(Aggregate::parse("sum(frobnicate(record.x))").is_err());
    }

    fn outer_and_calls(source: &str) -> (String, Vec<(AggregateFn, bool)>) {
        let a = Aggregate::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        let names = a.outer.references();
        let mut vars: Vec<String> = names.variables().into_iter().map(str::to_owned).collect();
        vars.sort();
        (
            vars.join(","),
            a.calls
                .iter()
                .map(|c| (c.function, c.argument.is_some()))
                .collect(),
        )
    }

    #[test]
    fn aggregate_calls_are_lifted_out_of_the_expression() {
        assert_eq!(
            outer_and_calls("sum(record.px*record.qty)/sum(record.qty)"),
            (
                "__agg0,__agg1".to_owned(),
                vec![(AggregateFn::Sum, true), (AggregateFn::Sum, true)]
            )
        );
        assert_eq!(
            outer_and_calls("count() + max(record.x) - 1").1,
            vec![(AggregateFn::Count, false), (AggregateFn::Max, true)]
        );
    }

    #[test]
    fn strings_methods_and_nesting_are_respected() {
        assert_eq!(
            outer_and_calls("last(record.tag == 'sum(' ? 1.0 : 2.0)").1,
            vec![(AggregateFn::Last, true)]
        );
        assert_eq!(
            Aggregate::parse("record.items.max(x)").err(),
            Some("an aggregate must call count(), sum(), avg(), min(), max() or last()".into())
        );
        assert!(Aggregate::parse("sum(sum(record.x))").is_err());
        assert!(Aggregate::parse("count(record.x)").is_err());
        assert!(Aggregate::parse("sum()").is_err());
        assert!(Aggregate::parse("sum(record.x").is_err());
    }

    fn conditions(filter: &str) -> Option<Vec<Condition>> {
        conjunction(&Expr::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}")))
    }

    #[test]
    fn simple_conjunctions_are_read_off_the_tree() {
        let text = |s: &str| Literal::Text(s.into());
        assert_eq!(
            conditions(r#"record.sym == "AAPL" && record.px > 100.5"#),
            Some(vec![
                Condition {
                    path: vec!["sym".into()],
                    test: Test::Eq(text("AAPL"))
                },
                Condition {
                    path: vec!["px".into()],
                    test: Test::Order(">", 100.5)
                },
            ])
        );
        assert_eq!(
            conditions("record.venue.code in ['X', 'Y'] && record.n != 3"),
            Some(vec![
                Condition {
                    path: vec!["venue".into(), "code".into()],
                    test: Test::In(vec![text("X"), text("Y")])
                },
                Condition {
                    path: vec!["n".into()],
                    test: Test::Ne(Literal::Number(3.0))
                },
            ])
        );
        assert_eq!(
            conditions(r#"record.sym.startsWith("AA")"#),
            Some(vec![Condition {
                path: vec!["sym".into()],
                test: Test::Prefix("AA".into())
            }])
        );
    }

    #[test]
    fn other_filters_are_not_conjunctions_of_comparisons() {
        for filter in [
            r#"record.sym == "A" || record.sym == "B""#,
            "record.flag == true",
            "size(record.sym) > 2",
            "!(record.px > 1.0)",
            "record.px * 2.0 > 10.0",
            "record.a == record.b",
            r#"record.sym == "a\"b""#,
            "record.px > 1u",
            "record.sym < 'b'",
            "1.0 < record.px",
        ] {
            assert_eq!(conditions(filter), None, "{filter}");
        }
    }
}
