//! CSV exports of both APIs: fields quoted when they need to be and never read as formulas
//! by a spreadsheet, times in UTC to the second, and the download answer.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// A CSV field: quoted when it needs to be, and never read as a formula by a spreadsheet.
pub fn field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// A time for people reading a CSV: UTC, to the second.
pub fn utc_text(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let day = park_model::time::format_date(secs.div_euclid(86_400) as i32);
    let rest = secs.rem_euclid(86_400);
    format!(
        "{day}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A CSV file to download as `name`.
pub fn download(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{field, utc_text};

    #[test]
    fn fields_are_quoted_when_needed_and_never_read_as_formulas() {
        assert_eq!(field("d1"), "d1");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("-1+2"), "'-1+2");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
    }

    #[test]
    fn times_are_utc_to_the_second() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(1_796_658_353_091_238), "2026-12-07T15:45:53Z");
    }
}
