//! Finance exports as RFC 4180 CSV (`Accept: text/csv`): a header row, CRLF line ends, and no
//! cell a spreadsheet would run as a formula. A text cell that begins with `=`, `+`, `-`,
//! `@`, a tab or a carriage return (a vendor can name a plan `=HYPERLINK(…)`) is written with
//! a leading `'`, which spreadsheets show as text; numbers are written as they are.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use std::str::FromStr;

/// Whether the client asked for CSV.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("text/csv"))
}

/// `cell` as a spreadsheet may read it without running it.
pub fn inert(cell: &str) -> String {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && Decimal::from_str(cell).is_err() {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

/// The rows under `header` as a `text/csv` answer.
pub fn answer(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Response {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let written = out.write_record(header).and_then(|()| {
        rows.into_iter().try_for_each(|row| {
            let row: Vec<String> = row.iter().map(|cell| inert(cell)).collect();
            out.write_record(&row)
        })
    });
    let body = written
        .map_err(|e| e.to_string())
        .and_then(|()| out.into_inner().map_err(|e| e.to_string()));
    match body {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            crate::problem::ApiError::Core(wharf_core::CoreError::internal(e)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_become_text_and_numbers_stay_numbers() {
        assert_eq!(
            inert("=HYPERLINK(\"http://x.invalid\")"),
            "'=HYPERLINK(\"http://x.invalid\")"
        );
        for risky in ["+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(inert(risky), format!("'{risky}"));
        }
        for plain in ["-3.50", "12.5", "Pro plan", ""] {
            assert_eq!(inert(plain), plain);
        }
    }
}
