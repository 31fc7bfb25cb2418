//! CEL expressions as Wharf uses them: compiled when a pipeline or filter is saved, so a bad
//! expression is refused with its position instead of failing at run time.

use crate::error::FieldError;

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

/// Aggregate functions of a `window` rule.
pub const AGGREGATES: &[&str] = &["count", "sum", "avg", "min", "max", "last"];

/// The longest expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;

/// Compiles `source`, checking that it only calls known functions (`extra` adds more).
/// On failure returns one error at `path` naming the line and column.
pub fn check(path: &str, source: &str, extra: &[&str]) -> Result<(), FieldError> {
    if source.trim().is_empty() {
        return Err(FieldError::new(path, "expression is empty"));
    }
    if source.len() > MAX_EXPR_LEN {
        return Err(FieldError::new(
            path,
            format!("expression is longer than {MAX_EXPR_LEN} bytes"),
        ));
    }
    let program = cel::Program::compile(source).map_err(|errs| {
        let first = errs.errors.first();
        let (line, column) = first.map(|e| (e.pos.0, e.pos.1 + 1)).unwrap_or((1, 1));
        let msg = first
            .map(|e| e.msg.clone())
            .unwrap_or_else(|| "syntax error".into());
        FieldError::new(
            path,
            format!("invalid CEL at line {line}, column {column}: {msg}"),
        )
    })?;
    let refs = program.references();
    let mut unknown: Vec<&str> = refs
        .functions()
        .into_iter()
        .filter(|f| !f.starts_with('_') && !f.starts_with('@') && !f.contains('.'))
        .filter(|f| !STANDARD_FUNCTIONS.contains(f) && !extra.contains(f))
        .collect();
    unknown.sort_unstable();
    if let Some(f) = unknown.first() {
        return Err(FieldError::new(path, format!("unknown function `{f}`")));
    }
    Ok(())
}

/// Variables `source` refers to (parsing it; empty when it does not parse).
pub fn variables(source: &str) -> Vec<String> {
    cel::Program::compile(source)
        .map(|p| {
            p.references()
                .variables()
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_expression_compiles() {
        assert_eq!(
            check("expr", "record.price > 100.0 && size(record.sym) > 0", &[]),
            Ok(())
        );
    }

    #[test]
    fn a_syntax_error_names_its_position() {
        let err = check("rules[0].expr", "record.price > > 1", &[]).err();
        let err = err.map(|e| (e.path, e.message.contains("line 1, column")));
        assert_eq!(err, Some(("rules[0].expr".to_owned(), true)));
    }

    #[test]
    fn unknown_functions_are_refused_unless_allowed() {
        assert!(check("e", "frobnicate(record.x)", &[]).is_err());
        assert!(check("e", "sum(record.x) / count()", AGGREGATES).is_ok());
        assert!(check("e", "sum(record.x)", &[]).is_err());
    }
}
