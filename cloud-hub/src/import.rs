//! The park's enterprises and people to and from CSV, as a park brings them from its old
//! system or a spreadsheet: a dry run that reports every bad row by line and column, then an
//! import that is all or nothing (one change of the directory, or none), and an export of
//! each list in the same columns (plus who made and changed each record), so an export
//! edited in a spreadsheet imports again.
//!
//! Columns are found by their header, in English or Chinese (`id`/`编号`, `name`/`名称`…),
//! in any order; a UTF-8 byte order mark (as spreadsheets write one) is ignored. Every row
//! is checked as the API checks one record, and the references (a person's enterprise and
//! access groups) against the park's directory at the moment of the import.

use std::collections::HashMap;

use accounts::Caller;
use accounts::http::{ApiError, ApiResult, Routes, audit_outcome};
use accounts::openapi::Doc;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use park_model::ParkDirectory;
use park_model::directory::{Credential, CredentialKey, Enterprise, Person};
use park_model::document::Entity;
use park_model::identity::Access;
use park_model::identity::Permission::{MasterDataEdit, TelemetryRead};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::ApiState;
use crate::master::{
    EditError, check_id, credential_from, enterprise_from, metas, no_park, park_key, person_from,
    person_refs, record_meta,
};

/// The most rows one import takes.
pub const MAX_ROWS: usize = 50_000;
/// The largest import request: a file of about 50,000 rows, as JSON.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The most row errors an answer lists (all are counted).
const MAX_LISTED_ERRORS: usize = 1000;

pub fn routes(r: Routes<ApiState>) -> Routes<ApiState> {
    use Access::Allowed;
    r.post(
        "/api/v1/parks/{park}/import/{kind}",
        Allowed(MasterDataEdit),
        import,
    )
    .body_limit(MAX_BODY)
    .doc(
        Doc::new("master data", "Import enterprises, people or credentials from CSV or XLSX, all or nothing")
            .describe("`kind` is `enterprises`, `people` or `credentials` (values in clear, kept only as keyed digests). The body holds `csv` (the text) or `xlsx` (the workbook, base64; its first sheet is read), not both. With `dry_run` nothing changes; either way the answer lists every bad row by line and column, and an import with any bad row changes nothing.")
            .body::<ImportBody>()
            .returns::<ImportReport>(),
    )
    .get(
        "/api/v1/parks/{park}/export/{kind}",
        Allowed(TelemetryRead),
        export,
    )
    .doc(
        Doc::new("master data", "Export enterprises, people or credentials (masked) as CSV")
            .csv(),
    )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// A CSV file's text: a header row, then one row per record.
    #[schema(max_length = 4_000_000)]
    #[serde(default)]
    csv: Option<String>,
    /// Or an XLSX workbook, base64: its first sheet, the same columns (rows are lines).
    #[schema(max_length = 4_000_000)]
    #[serde(default)]
    xlsx: Option<String>,
    /// Check every row and report, changing nothing.
    #[serde(default)]
    dry_run: bool,
}

/// A bad row: where, and what is wrong.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct RowError {
    /// The line in the file (the header is line 1).
    pub line: u64,
    /// The column's header as the file has it, or the field's name.
    pub column: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    pub kind: String,
    /// Data rows read.
    pub rows: usize,
    /// Records that would be (or were) new, and changed.
    pub created: usize,
    pub updated: usize,
    /// Whether the directory changed: never on a dry run or with any bad row.
    pub applied: bool,
    pub error_count: usize,
    /// The first thousand bad rows, in file order.
    pub errors: Vec<RowError>,
}

/// What a kind of record takes from a row.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Enterprises,
    People,
    Credentials,
}

impl Kind {
    fn parse(kind: &str) -> ApiResult<Kind> {
        match kind {
            "enterprises" => Ok(Kind::Enterprises),
            "people" => Ok(Kind::People),
            "credentials" => Ok(Kind::Credentials),
            other => Err(ApiError::not_found(format!(
                "no import or export of {other:?} (enterprises, people or credentials)"
            ))),
        }
    }

    /// The columns: field name, accepted headers, and the value when the column is left out
    /// (`None`: required).
    fn columns(self) -> &'static [(&'static str, &'static [&'static str], Option<&'static str>)] {
        match self {
            Kind::Enterprises => &[
                ("id", &["id", "编号", "企业编号"], None),
                ("name", &["name", "名称", "企业名称"], None),
                ("status", &["status", "状态"], Some("active")),
                ("kind", &["kind", "类型", "企业类型"], Some("tenant")),
            ],
            Kind::People => &[
                ("id", &["id", "编号", "人员编号"], None),
                ("name", &["name", "姓名", "名称"], None),
                (
                    "enterprise_id",
                    &["enterprise_id", "企业编号", "企业"],
                    None,
                ),
                ("status", &["status", "状态"], Some("active")),
                (
                    "access_group_ids",
                    &["access_group_ids", "门禁组"],
                    Some(""),
                ),
            ],
            Kind::Credentials => &[
                ("id", &["id", "编号", "凭证编号"], None),
                ("person_id", &["person_id", "人员编号", "人员"], None),
                ("kind", &["kind", "类型"], Some("card")),
                ("value", &["value", "卡号", "值"], None),
            ],
        }
    }

    fn collection(self) -> &'static str {
        match self {
            Kind::Enterprises => Enterprise::COLLECTION.as_str(),
            Kind::People => Person::COLLECTION.as_str(),
            Kind::Credentials => Credential::COLLECTION.as_str(),
        }
    }
}

/// A checked row, ready to write.
enum Record {
    Enterprise(Enterprise),
    Person(Person),
    Credential(Credential),
}

impl Record {
    fn id(&self) -> &str {
        match self {
            Record::Enterprise(e) => &e.id,
            Record::Person(p) => &p.id,
            Record::Credential(c) => &c.id,
        }
    }
}

/// Reads the file: every row checked on its own; the rows that pass, with their lines, and
/// the errors of those that do not.
fn read_rows(
    kind: Kind,
    text: &str,
    key: Option<&CredentialKey>,
) -> (usize, Vec<(u64, Record)>, Vec<RowError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut errors = Vec::new();
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            errors.push(RowError {
                line: 1,
                column: String::new(),
                message: format!("the header row cannot be read: {e}"),
            });
            return (0, Vec::new(), errors);
        }
    };
    // Where each field is: its column index and the header the file gave it.
    let mut at: HashMap<&'static str, (usize, String)> = HashMap::new();
    for (field, names, default) in kind.columns() {
        let found = headers
            .iter()
            .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)));
        match found {
            Some(i) => {
                at.insert(*field, (i, headers[i].to_string()));
            }
            None if default.is_none() => errors.push(RowError {
                line: 1,
                column: (*field).to_string(),
                message: format!(
                    "no {field} column (the header row names its columns: {})",
                    names.join(", ")
                ),
            }),
            None => {}
        }
    }
    if !errors.is_empty() {
        return (0, Vec::new(), errors);
    }
    let mut rows = 0;
    let mut good = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                errors.push(RowError {
                    line,
                    column: String::new(),
                    message: format!("the row cannot be read: {e}"),
                });
                rows += 1;
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        rows += 1;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if rows > MAX_ROWS {
            errors.push(RowError {
                line,
                column: String::new(),
                message: format!("a file takes at most {MAX_ROWS} rows"),
            });
            break;
        }
        let get = |field: &str| -> String {
            let default = kind
                .columns()
                .iter()
                .find(|(f, _, _)| *f == field)
                .and_then(|(_, _, d)| *d)
                .unwrap_or("");
            match at.get(field) {
                Some((i, _)) => record.get(*i).filter(|v| !v.is_empty()).unwrap_or(default),
                None => default,
            }
            .to_string()
        };
        let column_of = |field: &str| {
            at.get(field)
                .map(|(_, h)| h.clone())
                .unwrap_or_else(|| field.to_string())
        };
        let checked = match kind {
            Kind::Enterprises => {
                enterprise_from(&get("id"), &get("name"), &get("status"), &get("kind"))
                    .map(Record::Enterprise)
            }
            Kind::People => {
                let groups = get("access_group_ids")
                    .split([';', '；', '|'])
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect();
                person_from(
                    &get("id"),
                    &get("name"),
                    &get("enterprise_id"),
                    &get("status"),
                    groups,
                )
                .map(Record::Person)
            }
            Kind::Credentials => match key {
                Some(key) => credential_from(
                    key,
                    &get("id"),
                    &get("person_id"),
                    &get("kind"),
                    &get("value"),
                    (None, None),
                )
                .map(Record::Credential),
                None => Err(EditError::field(
                    "value",
                    "this hub holds no credential key for the park",
                )),
            },
        };
        match checked {
            Ok(r) => {
                if let Some(first) = seen.insert(r.id().to_string(), line) {
                    errors.push(RowError {
                        line,
                        column: column_of("id"),
                        message: format!("{:?} is also on line {first}", r.id()),
                    });
                } else {
                    good.push((line, r));
                }
            }
            Err(EditError::Field { field, message }) => errors.push(RowError {
                line,
                column: column_of(&field),
                message,
            }),
            Err(e) => errors.push(RowError {
                line,
                column: String::new(),
                message: ApiError::from(e).message,
            }),
        }
    }
    (rows, good, errors)
}

/// The references of the good rows, against the directory (and, for people, nothing
/// else: enterprises come first, in their own import). Returns (created, updated).
fn check_refs(
    d: &ParkDirectory,
    rows: &[(u64, Record)],
    columns: &HashMap<String, String>,
    errors: &mut Vec<RowError>,
) -> Result<(usize, usize), EditError> {
    let (mut created, mut updated) = (0, 0);
    for (line, r) in rows {
        let existed = match r {
            Record::Enterprise(e) => d.get::<Enterprise>(&e.id)?.is_some(),
            Record::Credential(c) => {
                if d.get::<Person>(&c.person_id)?.is_none() {
                    errors.push(RowError {
                        line: *line,
                        column: columns
                            .get("person_id")
                            .cloned()
                            .unwrap_or_else(|| "person_id".into()),
                        message: format!("no person {:?} in this park", c.person_id),
                    });
                }
                d.get::<Credential>(&c.id)?.is_some()
            }
            Record::Person(p) => {
                if let Err(EditError::Field { field, message }) = person_refs(d, p) {
                    errors.push(RowError {
                        line: *line,
                        column: columns.get(&field).cloned().unwrap_or(field),
                        message,
                    });
                }
                d.get::<Person>(&p.id)?.is_some()
            }
        };
        if existed {
            updated += 1;
        } else {
            created += 1;
        }
    }
    errors.sort_by_key(|e| e.line);
    Ok((created, updated))
}

/// The first sheet of an XLSX workbook as CSV text, one line per row (so that a CSV line is
/// the sheet's row: a line break inside a cell becomes a space), with numbers as people
/// typed them (`1001`, not `1001.0`); a cell holding a formula error is reported by its
/// row and column, and left empty.
fn xlsx_to_csv(bytes: &[u8]) -> Result<(String, Vec<RowError>), String> {
    use calamine::{Data, Reader, Xlsx};
    let mut book = Xlsx::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("the workbook cannot be read: {e}"))?;
    let sheet = book
        .worksheet_range_at(0)
        .ok_or("the workbook has no sheet")?
        .map_err(|e| format!("the first sheet cannot be read: {e}"))?;
    if sheet.height() > MAX_ROWS + 1 {
        return Err(format!("a file takes at most {MAX_ROWS} rows"));
    }
    // Rows and columns as the sheet numbers them, even when it starts below A1.
    let (top, left) = sheet.start().unwrap_or((0, 0));
    let mut out = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    let mut errors = Vec::new();
    // Rows above the used range stay empty, so that line numbers are the sheet's rows.
    for _ in 0..top {
        out.write_record([""]).map_err(|e| e.to_string())?;
    }
    for (r, row) in sheet.rows().enumerate() {
        let line = u64::from(top) + r as u64 + 1;
        let mut cells: Vec<String> = vec![String::new(); left as usize];
        for (c, cell) in row.iter().enumerate() {
            let text = match cell {
                Data::Empty => String::new(),
                Data::String(t) => t.replace(['\r', '\n'], " "),
                Data::Int(i) => i.to_string(),
                Data::Float(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                    format!("{}", *f as i64)
                }
                Data::Float(f) => f.to_string(),
                Data::Bool(b) => b.to_string(),
                Data::DateTime(d) => d.to_string(),
                Data::DateTimeIso(t) | Data::DurationIso(t) => t.clone(),
                Data::Error(e) => {
                    errors.push(RowError {
                        line,
                        column: column_letters(left as usize + c),
                        message: format!("the cell holds an error ({e:?})"),
                    });
                    String::new()
                }
            };
            cells.push(text);
        }
        if cells.is_empty() {
            cells.push(String::new());
        }
        out.write_record(&cells).map_err(|e| e.to_string())?;
    }
    let text = out.into_inner().map_err(|e| e.to_string())?;
    Ok((String::from_utf8_lossy(&text).into_owned(), errors))
}

/// A sheet's column as spreadsheets name it: 0 is `A`, 26 is `AA`.
fn column_letters(mut n: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// The headers the file gave each field, for reference errors.
fn header_names(kind: Kind, text: &str) -> HashMap<String, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let Ok(headers) = reader.headers() else {
        return HashMap::new();
    };
    kind.columns()
        .iter()
        .filter_map(|(field, names, _)| {
            headers
                .iter()
                .find(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
                .map(|h| ((*field).to_string(), h.to_string()))
        })
        .collect()
}

/// Why an import changed nothing, from inside the directory's edit.
enum Refused {
    Rows(Vec<RowError>),
    DryRun(usize, usize, Vec<RowError>),
    Edit(EditError),
}

impl From<park_model::DocError> for Refused {
    fn from(e: park_model::DocError) -> Self {
        Refused::Edit(EditError::Doc(e))
    }
}

impl From<EditError> for Refused {
    fn from(e: EditError) -> Self {
        Refused::Edit(e)
    }
}

async fn import(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((park, kind_text)): Path<(String, String)>,
    body: Result<Json<ImportBody>, JsonRejection>,
) -> ApiResult<Json<ImportReport>> {
    let Json(b) = body?;
    let kind = Kind::parse(&kind_text)?;
    check_id("park", &park)?;
    let key = match kind {
        Kind::Credentials => Some(park_key(&s, &park)?),
        _ => None,
    };
    let (text, cell_errors) = match (&b.csv, &b.xlsx) {
        (Some(csv), None) => (csv.clone(), Vec::new()),
        (None, Some(xlsx)) => {
            let bytes = data_encoding::BASE64
                .decode(xlsx.as_bytes())
                .map_err(|e| ApiError::invalid(format!("xlsx: not base64 ({e})")))?;
            tokio::task::spawn_blocking(move || xlsx_to_csv(&bytes))
                .await
                .map_err(|e| ApiError::internal(e.into()))?
                .map_err(|e| ApiError::invalid(format!("xlsx: {e}")))?
        }
        _ => {
            return Err(ApiError::invalid(
                "give the file as csv or as xlsx, one of them",
            ));
        }
    };
    let (rows, good, mut errors) = read_rows(kind, &text, key.as_ref());
    if !cell_errors.is_empty() {
        errors.extend(cell_errors);
        errors.sort_by_key(|e| e.line);
    }
    let columns = header_names(kind, &text);
    let dry_run = b.dry_run || !errors.is_empty();
    let audit = s.auth.audit(
        &caller.actor(),
        &format!("import_{kind_text}"),
        &format!("{park}/{kind_text}"),
        json!({"rows": rows, "dryRun": b.dry_run}),
    );
    let ids: Vec<String> = good.iter().map(|(_, r)| r.id().to_string()).collect();
    let (documents, store, park2) = (s.documents.clone(), s.store.clone(), park.clone());
    let message = format!("hub: import {kind_text} ({} rows)", good.len());
    let outcome = tokio::task::spawn_blocking(move || {
        documents.edit_directory(&store, &park2, &message, move |d: &mut ParkDirectory| {
            let (created, updated) = check_refs(d, &good, &columns, &mut errors)?;
            if !errors.is_empty() {
                return Err(Refused::Rows(errors));
            }
            if dry_run {
                return Err(Refused::DryRun(created, updated, errors));
            }
            for (_, r) in &good {
                match r {
                    Record::Enterprise(e) => d.upsert(e)?,
                    Record::Person(p) => d.upsert(p)?,
                    Record::Credential(c) => d.upsert(c)?,
                }
            }
            Ok((created, updated))
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?;
    let report = |created, updated, applied, errors: Vec<RowError>| ImportReport {
        kind: kind_text.clone(),
        rows,
        created,
        updated,
        applied,
        error_count: errors.len(),
        errors: errors.into_iter().take(MAX_LISTED_ERRORS).collect(),
    };
    match outcome {
        None => Err(no_park(&park)),
        Some(Err(Refused::Edit(e))) => {
            let result: ApiResult<ImportReport> = Err(e.into());
            Ok(Json(audit_outcome(&s.auth, audit, result).await?))
        }
        Some(Err(Refused::DryRun(created, updated, errors))) => {
            Ok(Json(report(created, updated, false, errors)))
        }
        Some(Err(Refused::Rows(errors))) => {
            if !b.dry_run {
                let refused = audit.with_outcome(format!("refused: {} bad rows", errors.len()));
                s.auth.record(refused).await.map_err(ApiError::internal)?;
            }
            Ok(Json(report(0, 0, false, errors)))
        }
        Some(Ok((created, updated))) => {
            s.auth
                .record(audit.clone())
                .await
                .map_err(ApiError::internal)?;
            record_meta(&s, &park, kind.collection(), ids, &caller);
            s.store.flush().await;
            Ok(Json(report(created, updated, true, Vec::new())))
        }
    }
}

async fn export(
    State(s): State<ApiState>,
    Path((park, kind_text)): Path<(String, String)>,
) -> ApiResult<Response> {
    let kind = Kind::parse(&kind_text)?;
    let documents = s.documents.clone();
    let park2 = park.clone();
    let read = tokio::task::spawn_blocking(move || {
        documents.read_directory(&park2, |d| match kind {
            Kind::Enterprises => d.entities::<Enterprise>().map(|e| {
                e.items
                    .into_values()
                    .map(|e| {
                        let cells = vec![
                            e.id.clone(),
                            e.name,
                            e.status.as_str().into(),
                            e.kind.as_str().into(),
                        ];
                        (e.id, cells)
                    })
                    .collect::<Vec<_>>()
            }),
            Kind::People => d.entities::<Person>().map(|p| {
                p.items
                    .into_values()
                    .map(|p| {
                        let cells = vec![
                            p.id.clone(),
                            p.name,
                            p.enterprise_id,
                            p.status.as_str().into(),
                            p.access_group_ids.join(";"),
                        ];
                        (p.id, cells)
                    })
                    .collect::<Vec<_>>()
            }),
            // Never a value: its kind, the characters people see, and its status.
            Kind::Credentials => d.entities::<Credential>().map(|c| {
                c.items
                    .into_values()
                    .map(|c| {
                        let cells = vec![
                            c.id.clone(),
                            c.person_id,
                            c.kind.as_str().into(),
                            format!("••••{}", c.suffix),
                            c.status.as_str().into(),
                        ];
                        (c.id, cells)
                    })
                    .collect::<Vec<_>>()
            }),
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?;
    let rows = match read {
        None => return Err(no_park(&park)),
        Some(r) => r.map_err(|e| ApiError::internal(e.into()))?,
    };
    let meta = metas(
        &s,
        &park,
        kind.collection(),
        rows.iter().map(|(id, _)| id.clone()).collect(),
    )
    .await?;
    let columns: Vec<&str> = match kind {
        Kind::Credentials => vec!["id", "person_id", "kind", "masked", "status"],
        _ => kind.columns().iter().map(|(f, _, _)| *f).collect(),
    };
    let mut out: String = columns
        .into_iter()
        .chain(["created_at", "created_by", "updated_at", "updated_by"])
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for ((_, cells), m) in rows.into_iter().zip(meta) {
        let mut line: Vec<String> = cells.iter().map(|c| accounts::csv::field(c)).collect();
        line.push(
            m.created_at
                .map(accounts::csv::utc_text)
                .unwrap_or_default(),
        );
        line.push(accounts::csv::field(m.created_by.as_deref().unwrap_or("")));
        line.push(
            m.updated_at
                .map(accounts::csv::utc_text)
                .unwrap_or_default(),
        );
        line.push(accounts::csv::field(m.updated_by.as_deref().unwrap_or("")));
        out.push_str(&line.join(","));
        out.push('\n');
    }
    Ok(accounts::csv::download(
        &format!("{park}-{kind_text}.csv"),
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_checked_with_their_line_and_column() {
        let text = "\u{feff}编号,名称,状态\nacme,Acme,active\nbad id,X,active\nglobex,,active\nacme,Again,active\ninitech,Initech,closed\n\n";
        let (rows, good, errors) = read_rows(Kind::Enterprises, text, None);
        assert_eq!(rows, 5);
        assert_eq!(good.len(), 1);
        assert_eq!(
            errors,
            vec![
                RowError {
                    line: 3,
                    column: "编号".into(),
                    message: "\"bad id\" is not an id (1 to 128 letters, digits, '-', '_' or '.')"
                        .into()
                },
                RowError {
                    line: 4,
                    column: "名称".into(),
                    message: "must be 1 to 200 characters without control characters".into()
                },
                RowError {
                    line: 5,
                    column: "编号".into(),
                    message: "\"acme\" is also on line 2".into()
                },
                RowError {
                    line: 6,
                    column: "状态".into(),
                    message: "\"closed\" is not one of active, suspended".into()
                },
            ]
        );
    }

    #[test]
    fn columns_are_named_as_spreadsheets_name_them() {
        assert_eq!(
            [0, 1, 25, 26, 27, 51, 52, 701, 702].map(column_letters),
            ["A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]
        );
    }

    #[test]
    fn a_missing_required_column_is_named_and_nothing_is_read() {
        let (rows, good, errors) = read_rows(Kind::People, "id,name\np1,Ann\n", None);
        assert_eq!((rows, good.len()), (0, 0));
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (errors[0].line, errors[0].column.as_str()),
            (1, "enterprise_id")
        );
    }

    #[test]
    fn groups_split_on_semicolons_and_defaults_fill_left_out_columns() {
        let (_, good, errors) = read_rows(
            Kind::People,
            "name,id,enterprise_id,access_group_ids\nAnn,ann,acme,lobby; lab\n\"Li, Wei\",li,acme,\n",
            None,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let people: Vec<&Person> = good
            .iter()
            .map(|(_, r)| match r {
                Record::Person(p) => p,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(people[0].access_group_ids, ["lobby", "lab"]);
        assert_eq!(people[1].name, "Li, Wei");
        assert!(people[1].access_group_ids.is_empty());
        assert_eq!(people[1].status.as_str(), "active");
    }
}
