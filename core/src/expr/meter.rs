//! The evaluation budget. Every expression is evaluated from a *metered* copy of its syntax
//! tree, in which a `__tick` call wraps each step that can repeat or grow: every iteration of
//! a comprehension (`all`, `exists`, `map`, `filter`, …) and every `+` (concatenation). A
//! tick counts one step, plus one per 256 bytes of a string or bytes value and one per 16
//! elements of a list or map it passes through, so work *and* the memory a program builds
//! are bounded. Evaluation stops with "over the evaluation budget" at the first tick past the
//! budget.
//!
//! The same walk adds up the steps of the program's worst case where collection sizes are
//! known when it is saved (literal lists and maps; other collections count as empty), so a
//! rule such as `[0,…,9].all(a, [0,…,9].all(b, …))` nested eight deep is refused when saved
//! instead of failing on every record.

use cel::common::ast::{CallExpr, EntryExpr, Expr as Node, ListExpr};
use cel::common::types::{CelBytes, CelString, DYN_TYPE};
use cel::common::value::CowVal;
use cel::{Context, Env, ExecutionError, IdedExpr, Value};
use std::cell::Cell;
use std::sync::{Arc, OnceLock};

/// What an evaluation over its budget fails with.
pub const OVER_BUDGET: &str = "over the evaluation budget";

const TICK: &str = "__tick";
/// Bytes of text, and elements of a collection, that cost one more step.
const BYTES_PER_STEP: usize = 256;
const ELEMENTS_PER_STEP: usize = 16;
/// Steps between two offers of the core to other threads (see [`tick`]).
const STEPS_PER_YIELD: u64 = 128;

/// Steps used and allowed in the evaluation running on this thread.
#[derive(Clone, Copy)]
struct Meter {
    used: u64,
    limit: u64,
}

thread_local! {
    static METER: Cell<Meter> = const { Cell::new(Meter { used: 0, limit: 0 }) };
}

/// The environment programs run in: CEL's standard library and the tick.
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_overload(TICK, "wharf_tick", vec![DYN_TYPE], tick)
            .unwrap_or_else(|e| panic!("the tick is declared once: {e:?}"));
        Arc::new(env)
    })
    .clone()
}

/// Counts one step (more for large values) and passes its argument through.
fn tick<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = args.pop().ok_or(ExecutionError::MissingArgumentOrTarget)?;
    let cost = 1 + size_cost(&value);
    let meter = METER.with(|m| {
        let mut meter = m.get();
        meter.used = meter.used.saturating_add(cost);
        m.set(meter);
        meter
    });
    // A long evaluation offers its core to any thread waiting for it every 128 steps (about
    // a tenth of a millisecond), so threads woken behind it run at once rather than after
    // the scheduler's time slice.
    if meter.used / STEPS_PER_YIELD != (meter.used - cost) / STEPS_PER_YIELD {
        std::thread::yield_now();
    }
    if meter.used > meter.limit {
        return Err(ExecutionError::function_error(TICK, OVER_BUDGET));
    }
    Ok(value)
}

fn size_cost(value: &CowVal<'_, '_>) -> u64 {
    let units = if let Some(s) = value.downcast_ref::<CelString>() {
        s.inner().len() / BYTES_PER_STEP
    } else if let Some(b) = value.downcast_ref::<CelBytes>() {
        b.inner().len() / BYTES_PER_STEP
    } else if let Some(sizer) = value.as_sizer() {
        usize::try_from(*sizer.size().inner()).unwrap_or(0) / ELEMENTS_PER_STEP
    } else {
        0
    };
    units as u64
}

/// Evaluates a metered `tree` with `bindings` bound, in at most `budget` steps. A program
/// over its budget fails even where a logical operator would have absorbed the error.
pub fn evaluate(tree: &IdedExpr, bindings: &[(&str, Value)], budget: u64) -> Result<Value, String> {
    let mut ctx = Context::with_env(env());
    for (name, value) in bindings {
        ctx.add_variable_from_value(*name, value.clone());
    }
    METER.with(|m| {
        m.set(Meter {
            used: 0,
            limit: budget,
        })
    });
    let result = Value::resolve(tree, &ctx);
    let used = METER.with(|m| m.replace(Meter { used: 0, limit: 0 }).used);
    if used > budget {
        return Err(format!("{OVER_BUDGET} of {budget} steps"));
    }
    result.map_err(|e| e.to_string())
}

/// Rewrites `node` in place into its metered form; answers the steps of its worst case with
/// collections of unknown size counted as empty.
pub(super) fn meter(node: &mut IdedExpr) -> u64 {
    match &mut node.expr {
        Node::Comprehension(c) => {
            let fixed = meter(&mut c.iter_range) + meter(&mut c.accu_init) + meter(&mut c.result);
            let iterations = static_size(&c.iter_range).unwrap_or(0);
            let per_iteration = if matches!(c.loop_cond.expr, Node::Literal(_)) {
                // `map` and `filter`: cel appends to the result in place only while the step
                // keeps its shape, so the tick goes inside it.
                meter_append_step(&c.accu_var, &mut c.loop_step)
            } else {
                // `all` and `exists`: an error in their step may be absorbed by a later
                // element, an error in their condition never is.
                let steps = meter(&mut c.loop_cond) + meter(&mut c.loop_step);
                wrap(&mut c.loop_cond);
                steps
            };
            fixed.saturating_add(iterations.saturating_mul(per_iteration.saturating_add(1)))
        }
        Node::Call(call) if is_concatenation(call) => {
            let steps = children(node)
                .into_iter()
                .map(meter)
                .fold(1, u64::saturating_add);
            wrap(node);
            steps
        }
        _ => children(node)
            .into_iter()
            .map(meter)
            .fold(0, u64::saturating_add),
    }
}

/// Meters the step of a comprehension whose condition is a literal: `@result + [e]` ticks in
/// `e`, `g ? @result + [e] : @result` in `g`, any other step around itself.
fn meter_append_step(accu: &str, step: &mut IdedExpr) -> u64 {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Node::Ident(name) if name == accu);
    if let Node::Call(call) = &mut step.expr {
        if let Some(items) = appended(call, &is_accu) {
            let steps = items
                .elements
                .iter_mut()
                .map(meter)
                .fold(0, u64::saturating_add);
            if let Some(first) = items.elements.first_mut() {
                wrap(first);
            }
            return steps;
        }
        if call.func_name == "_?_:_"
            && call.target.is_none()
            && let [guard, then, otherwise] = call.args.as_mut_slice()
            && is_accu(otherwise)
            && let Node::Call(then_call) = &mut then.expr
            && let Some(items) = appended(then_call, &is_accu)
        {
            let steps = items
                .elements
                .iter_mut()
                .map(meter)
                .fold(0, u64::saturating_add);
            let steps = steps.saturating_add(meter(guard));
            wrap(guard);
            return steps;
        }
    }
    let steps = meter(step);
    wrap(step);
    steps
}

/// The list of `accu + [items]`.
fn appended<'a>(
    call: &'a mut CallExpr,
    is_accu: &impl Fn(&IdedExpr) -> bool,
) -> Option<&'a mut ListExpr> {
    if call.func_name != "_+_" || call.target.is_some() {
        return None;
    }
    match call.args.as_mut_slice() {
        [accu, items] if is_accu(accu) => match &mut items.expr {
            Node::List(list) => Some(list),
            _ => None,
        },
        _ => None,
    }
}

fn is_concatenation(call: &CallExpr) -> bool {
    call.func_name == "_+_" && call.target.is_none()
}

/// `node` becomes `__tick(node)`.
fn wrap(node: &mut IdedExpr) {
    let inner = std::mem::replace(&mut node.expr, Node::Unspecified);
    node.expr = Node::Call(CallExpr {
        func_name: TICK.to_owned(),
        target: None,
        args: vec![IdedExpr {
            id: node.id,
            expr: inner,
        }],
    });
}

/// The number of elements a collection expression has whatever the record: literal lists and
/// maps, their concatenations, and `map` over them.
fn static_size(node: &IdedExpr) -> Option<u64> {
    match &node.expr {
        Node::List(list) => Some(list.elements.len() as u64),
        Node::Map(map) => Some(map.entries.len() as u64),
        Node::Call(call) if call.func_name == "__tick" => static_size(call.args.first()?),
        Node::Call(call) if is_concatenation(call) => match call.args.as_slice() {
            [a, b] => Some(static_size(a)?.saturating_add(static_size(b)?)),
            _ => None,
        },
        // `map` (and `filter`, at most as many) keeps its range's size.
        Node::Comprehension(c) if matches!(c.loop_cond.expr, Node::Literal(_)) => {
            static_size(&c.iter_range)
        }
        _ => None,
    }
}

/// The direct children of a node.
pub(super) fn children(node: &mut IdedExpr) -> Vec<&mut IdedExpr> {
    match &mut node.expr {
        Node::Call(call) => {
            let mut children: Vec<&mut IdedExpr> = call.args.iter_mut().collect();
            if let Some(target) = call.target.as_deref_mut() {
                children.push(target);
            }
            children
        }
        Node::Comprehension(c) => vec![
            &mut c.iter_range,
            &mut c.accu_init,
            &mut c.loop_cond,
            &mut c.loop_step,
            &mut c.result,
        ],
        Node::List(list) => list.elements.iter_mut().collect(),
        Node::Map(map) => map
            .entries
            .iter_mut()
            .flat_map(|e| entry(&mut e.expr))
            .collect(),
        Node::Struct(s) => s
            .entries
            .iter_mut()
            .flat_map(|e| entry(&mut e.expr))
            .collect(),
        Node::Select(select) => vec![select.operand.as_mut()],
        Node::Unspecified | Node::Ident(_) | Node::Literal(_) => vec![],
    }
}

fn entry(e: &mut EntryExpr) -> Vec<&mut IdedExpr> {
    match e {
        EntryExpr::MapEntry(m) => vec![&mut m.key, &mut m.value],
        EntryExpr::StructField(f) => vec![&mut f.value],
    }
}

#[cfg(test)]
mod tests {
    use super::super::Expr;
    use super::*;

    fn run(source: &str, budget: u64) -> Result<Value, String> {
        let e = Expr::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        evaluate(e.metered(), &[("record", Value::Int(3))], budget)
    }

    fn nested_all(depth: usize) -> String {
        let list = "[0,1,2,3,4,5,6,7,8,9]";
        let mut source = "record >= 0".to_owned();
        for d in 0..depth {
            source = format!("{list}.all(x{d}, {source})");
        }
        source
    }

    #[test]
    fn cheap_programs_give_the_same_answers_as_cel() {
        assert_eq!(run("record + 1", 10), Ok(Value::Int(4)));
        assert_eq!(
            run("[1, 2, 3].map(x, x * record)", 10).map(|v| format!("{v:?}")),
            Ok("List([Int(3), Int(6), Int(9)])".to_owned())
        );
        assert_eq!(
            run("[1, 2, 3].filter(x, x > 1).size()", 10),
            Ok(Value::Int(2))
        );
        assert_eq!(
            run("[1, 2, 3].exists(x, x == record)", 10),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            run("[1, 2, 3].all(x, x < record)", 10),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            run("[1, 2, 3].exists_one(x, x > 2)", 10),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn loops_stop_at_the_budget_even_where_errors_would_be_absorbed() {
        let err = run(&nested_all(8), 100_000).err().unwrap_or_default();
        assert!(err.contains(OVER_BUDGET), "{err}");
        // `false || error` would be the error, `true || error` absorbs it: not the budget.
        let absorbed = format!("record > 0 || {}", nested_all(8));
        assert!(run(&absorbed, 100_000).is_ok());
        let late = format!("{} || record > 0", nested_all(8));
        let err = run(&late, 100_000).err().unwrap_or_default();
        assert!(err.contains(OVER_BUDGET), "{err}");
        let map = "[0,1,2,3,4,5,6,7,8,9].map(a, [0,1,2,3,4,5,6,7,8,9].map(b, [0,1,2,3,4,5,6,7,8,9].map(c, a + b + c))).size()";
        assert!(
            run(map, 100)
                .err()
                .unwrap_or_default()
                .contains(OVER_BUDGET)
        );
        assert_eq!(run(map, 5_000), Ok(Value::Int(10)));
    }

    #[test]
    fn growing_values_cost_by_their_size() {
        // Thirty concatenations of a 100 kB text copy 46 MB: about 180,000 steps.
        let source = vec!["record"; 30].join(" + ");
        let e = Expr::parse(&format!("size({source})")).unwrap_or_else(|e| panic!("{e}"));
        let text = Value::String(std::sync::Arc::new("x".repeat(100_000)));
        let big = evaluate(e.metered(), &[("record", text.clone())], 100_000);
        assert!(big.err().unwrap_or_default().contains(OVER_BUDGET));
        let small = evaluate(
            e.metered(),
            &[("record", Value::String("x".to_owned().into()))],
            100_000,
        );
        assert_eq!(small, Ok(Value::Int(30)));
    }

    #[test]
    fn the_worst_case_is_known_where_sizes_are() {
        let steps = |source: &str| {
            Expr::parse(source)
                .map(|e| e.worst_case())
                .unwrap_or_default()
        };
        assert_eq!(steps("record.x > 1"), 0);
        assert_eq!(steps("[1, 2, 3].all(x, x > 0)"), 3);
        assert!(steps(&nested_all(8)) >= 100_000_000);
        assert_eq!(steps("record.items.all(x, x > 0)"), 0);
        assert_eq!(steps("([1, 2] + [3]).exists(x, x > 0)"), 1 + 3);
        assert_eq!(
            steps("[1, 2].map(x, [1, 2, 3].map(y, y)).size()"),
            2 * (1 + 3)
        );
    }
}
