//! Window aggregates. An aggregate expression such as `sum(record.px*record.qty)/sum(record.qty)`
//! is split into its aggregate calls (each argument is a CEL program run per record) and an
//! outer CEL expression over their results, bound as `__agg0`, `__agg1`, ….

use crate::expr::AGGREGATES;

/// One aggregate call inside an expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `count`, `sum`, `avg`, `min`, `max` or `last`.
    pub function: String,
    /// The argument's source, empty for `count()`.
    pub argument: String,
}

/// An aggregate expression taken apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The expression with each call replaced by `__aggN`.
    pub outer: String,
    /// The calls, in order of appearance.
    pub calls: Vec<Call>,
}

/// Takes an aggregate expression apart; `Err` names what is wrong.
pub fn split(source: &str) -> Result<Split, String> {
    let split = scan(source)?;
    if split.calls.is_empty() {
        return Err("an aggregate must call count(), sum(), avg(), min(), max() or last()".into());
    }
    Ok(split)
}

fn scan(source: &str) -> Result<Split, String> {
    let bytes = source.as_bytes();
    let mut outer = String::with_capacity(source.len());
    let mut calls = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' || c == b'\'' {
            let end = skip_string(bytes, i)?;
            outer.push_str(&source[i..end]);
            i = end;
            continue;
        }
        if is_ident_start(c) && (i == 0 || (!is_ident(bytes[i - 1]) && bytes[i - 1] != b'.')) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let name = &source[start..i];
            let mut j = i;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if AGGREGATES.contains(&name) && j < bytes.len() && bytes[j] == b'(' {
                let close = matching_paren(bytes, j)?;
                let argument = source[j + 1..close].trim().to_owned();
                if name == "count" && !argument.is_empty() {
                    return Err("count() takes no argument".into());
                }
                if name != "count" && argument.is_empty() {
                    return Err(format!("{name}() needs an argument"));
                }
                if !scan(&argument)?.calls.is_empty() {
                    return Err(format!("the argument of {name}() cannot itself aggregate"));
                }
                outer.push_str(&format!("__agg{}", calls.len()));
                calls.push(Call {
                    function: name.to_owned(),
                    argument,
                });
                i = close + 1;
                continue;
            }
            outer.push_str(name);
            continue;
        }
        outer.push(c as char);
        i += 1;
    }
    Ok(Split { outer, calls })
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn skip_string(bytes: &[u8], start: usize) -> Result<usize, String> {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("unterminated string".into())
}

fn matching_paren(bytes: &[u8], open: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = skip_string(bytes, i)?;
                continue;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err("unbalanced parentheses".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_calls_are_lifted_out_of_the_expression() {
        let s =
            split("sum(record.px*record.qty)/sum(record.qty)").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.outer, "__agg0/__agg1");
        assert_eq!(
            s.calls[0],
            Call {
                function: "sum".into(),
                argument: "record.px*record.qty".into()
            }
        );
        assert_eq!(s.calls[1].argument, "record.qty");
        let c = split("count() + max(record.x) - 1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.outer, "__agg0 + __agg1 - 1");
    }

    #[test]
    fn strings_methods_and_nesting_are_respected() {
        let s = split("last(record.tag == 'sum(' ? 1.0 : 2.0)").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.calls.len(), 1);
        assert_eq!(s.calls[0].argument, "record.tag == 'sum(' ? 1.0 : 2.0");
        assert_eq!(
            split("record.items.max(x)").err(),
            Some("an aggregate must call count(), sum(), avg(), min(), max() or last()".into())
        );
        assert!(split("sum(sum(record.x))").is_err());
        assert!(split("count(record.x)").is_err());
        assert!(split("sum()").is_err());
        assert!(split("sum(record.x").is_err());
    }
}
