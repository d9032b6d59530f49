//! The OpenAPI 3.1 document of an API, built from its route table: each route's method,
//! path and requirement come from the table itself, and what a route takes and gives
//! (query parameters, body, answer) from the Rust types its handler uses, through
//! utoipa's derives. A route without a [`Doc`] is reported by [`Routes::undocumented`], so
//! a test can refuse an API whose document lacks a route.
//!
//! Every operation that needs a caller names both ways in: the session cookie (with the
//! CSRF header on writes) and an API token; every error answer is the one error shape.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::http::Method;
use park_model::identity::Access;
use park_model::identity::web::{CSRF_HEADER, SESSION_COOKIE};
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
    PathItem, Paths, Ref, RefOr, Required, ResponseBuilder, Schema, Type,
};
use utoipa::{IntoParams, ToSchema};

use crate::http::{RouteSpec, Routes};

/// What a route takes and gives, for the API's document.
#[derive(Clone, Default)]
pub struct Doc {
    tag: &'static str,
    summary: &'static str,
    description: Option<&'static str>,
    query: Vec<utoipa::openapi::path::Parameter>,
    body: Option<String>,
    /// The body is an XML document (a payment provider's message), not JSON.
    xml_body: bool,
    answer: Answer,
    statuses: Vec<(&'static str, &'static str)>,
    schemas: Vec<(String, RefOr<Schema>)>,
}

#[derive(Clone, Default)]
enum Answer {
    /// A JSON object whose shape the document does not pin down yet.
    #[default]
    Object,
    Json(String),
    EventStream,
    Text,
    Csv,
    Xml,
}

impl Doc {
    /// A route in `tag` (the API's area: points, alarms, doors...) doing `summary`.
    pub fn new(tag: &'static str, summary: &'static str) -> Doc {
        Doc {
            tag,
            summary,
            ..Doc::default()
        }
    }

    /// A longer explanation: limits, what is refused and why.
    pub fn describe(mut self, text: &'static str) -> Doc {
        self.description = Some(text);
        self
    }

    /// The query parameters, from the type the handler reads them into.
    pub fn query<T: IntoParams>(mut self) -> Doc {
        self.query = T::into_params(|| Some(ParameterIn::Query));
        self
    }

    /// The JSON body, from the type the handler reads it into.
    pub fn body<T: ToSchema>(mut self) -> Doc {
        self.body = Some(self.schema::<T>());
        self
    }

    /// The JSON answer, from the type the handler writes it from.
    pub fn returns<T: ToSchema>(mut self) -> Doc {
        let name = self.schema::<T>();
        self.answer = Answer::Json(name);
        self
    }

    /// Another answer this route gives besides the usual ones (`401` from logging in).
    pub fn status(mut self, code: &'static str, description: &'static str) -> Doc {
        self.statuses.push((code, description));
        self
    }

    /// A stream of server-sent events.
    pub fn event_stream(mut self) -> Doc {
        self.answer = Answer::EventStream;
        self
    }

    /// A CSV file (UTF-8 with a header row), as a download.
    pub fn csv(mut self) -> Doc {
        self.answer = Answer::Csv;
        self
    }

    /// An XML document in and out: a payment provider's signed messages.
    pub fn xml(mut self) -> Doc {
        self.xml_body = true;
        self.answer = Answer::Xml;
        self
    }

    /// Plain text (the Prometheus exposition format).
    pub fn text(mut self) -> Doc {
        self.answer = Answer::Text;
        self
    }

    fn schema<T: ToSchema>(&mut self) -> String {
        let name = T::name().into_owned();
        self.schemas.push((name.clone(), T::schema()));
        T::schemas(&mut self.schemas);
        name
    }
}

/// The schema of a string that is one of `values` (for `#[schema(schema_with = ...)]` on
/// a field the handler parses with the domain type's own parser, whose names these are).
pub fn one_of(values: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    let values: Vec<&str> = values.into_iter().collect();
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values))
            .build(),
    ))
}

/// What a served document lacks against the route table it was built from: a route
/// missing, without a summary, or without one of its path parameters; an operation id used
/// twice; a requirement (public, a session, a permission) not as the table says. Empty
/// when the document describes every route. For the APIs' tests.
pub fn check_document(doc: &serde_json::Value, routes: &[RouteSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for route in routes {
        let at = format!("{} {}", route.method, route.path);
        let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        if !op.is_object() {
            problems.push(format!("{at} is missing from the document"));
            continue;
        }
        if !op["summary"].is_string() {
            problems.push(format!("{at} has no summary"));
        }
        match op["operationId"].as_str() {
            Some(id) if ids.insert(id.to_string()) => {}
            _ => problems.push(format!("{at}: no operation id, or one used twice")),
        }
        for name in route.path.split('/').filter_map(|s| s.strip_prefix('{')) {
            let name = name.trim_end_matches('}');
            let has = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
            if !has {
                problems.push(format!("{at}: path parameter {name} is not described"));
            }
        }
        let secured = op["security"].is_array();
        let right = match route.access {
            Access::Public => op.get("security").is_none(),
            Access::Allowed(p) => secured && op["x-permission"] == p.as_str(),
            _ => secured,
        };
        if !right {
            problems.push(format!("{at}: the requirement is not {:?}", route.access));
        }
    }
    problems
}

/// The schema of a sample's value: a number, a boolean or a text; null for a failed read.
pub fn sample_value() -> RefOr<Schema> {
    RefOr::T(Schema::OneOf(
        utoipa::openapi::OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    ))
}

/// The strings of one of the park model's enumerations (every value, as stored).
pub fn texts<T: Copy>(all: &[T], text: fn(T) -> &'static str) -> RefOr<Schema> {
    one_of(all.iter().map(|v| text(*v)))
}

/// The schemas of the park model's enumerated strings, shared by both APIs' documents.
pub mod schemas {
    use park_model::directory::{
        CredentialKind, CredentialStatus, EnterpriseKind, EnterpriseStatus, PersonStatus,
    };
    use park_model::parking::{PassKind, PassStatus};
    use utoipa::openapi::{RefOr, Schema};

    use super::{one_of, texts};

    pub fn person_statuses() -> RefOr<Schema> {
        texts(PersonStatus::ALL, PersonStatus::as_str)
    }

    pub fn credential_kinds() -> RefOr<Schema> {
        texts(CredentialKind::ALL, CredentialKind::as_str)
    }

    pub fn credential_statuses() -> RefOr<Schema> {
        texts(CredentialStatus::ALL, CredentialStatus::as_str)
    }

    pub fn enterprise_statuses() -> RefOr<Schema> {
        texts(EnterpriseStatus::ALL, EnterpriseStatus::as_str)
    }

    pub fn enterprise_kinds() -> RefOr<Schema> {
        texts(EnterpriseKind::ALL, EnterpriseKind::as_str)
    }

    pub fn pass_kinds() -> RefOr<Schema> {
        texts(PassKind::ALL, PassKind::as_str)
    }

    pub fn pass_statuses() -> RefOr<Schema> {
        texts(PassStatus::ALL, PassStatus::as_str)
    }

    /// A sample's quality.
    pub fn qualities() -> RefOr<Schema> {
        one_of(["good", "uncertain", "bad", "stale"])
    }
}

/// Whole numbers from JSON as JSON Schema counts them: `5` and `5.0` alike (a body field
/// documented as an integer), anything with a fraction or out of range refused.
pub mod whole {
    use serde::{Deserialize, Deserializer, de::Error as _};

    fn of<'de, D: Deserializer<'de>>(n: serde_json::Number) -> Result<i64, D::Error> {
        if let Some(i) = n.as_i64() {
            return Ok(i);
        }
        // Only where a float holds every whole number exactly (2^53): beyond, a float
        // could stand for a number it rounded (-9223372036854775809 reads as i64::MIN).
        const EXACT: f64 = 9_007_199_254_740_992.0;
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => Ok(f as i64),
            _ => Err(D::Error::custom(format!(
                "{n} is not a whole number in range"
            ))),
        }
    }

    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        of::<D>(serde_json::Number::deserialize(d)?)
    }

    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(of::<D>)
            .transpose()
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let n = of::<D>(serde_json::Number::deserialize(d)?)?;
        u64::try_from(n).map_err(|_| D::Error::custom(format!("{n} is negative")))
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let n = of::<D>(serde_json::Number::deserialize(d)?)?;
        u32::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
    }
}

/// The error every failing request gets.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    /// A stable code for programs (`not_found`, `invalid`, `forbidden`...).
    code: String,
    /// What was wrong, for people.
    message: String,
    /// More about it, where there is more (the field at fault, a retry delay...).
    details: Option<serde_json::Value>,
    /// The request's trace id, as logged.
    trace_id: String,
}

fn json_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn any_object() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new().schema_type(Type::Object).build(),
    ))
}

/// The error answers every operation may give: status, name under `components/responses`,
/// and what it means. 401 and 403 only where a caller is needed, 415 only where a body is
/// read.
const STANDARD_ERRORS: &[(&str, &str, &str)] = &[
    (
        "400",
        "Malformed",
        "The request was malformed: the message names what was wrong.",
    ),
    ("401", "Unauthenticated", "No valid session or token."),
    (
        "403",
        "Forbidden",
        "The caller may not do this here (or a write came without its CSRF token).",
    ),
    ("404", "NotFound", "No such thing (or no such route)."),
    (
        "405",
        "MethodNotAllowed",
        "The path does not take this method; `Allow` lists those it takes.",
    ),
    (
        "409",
        "Conflict",
        "The request conflicts with the state of what it names.",
    ),
    ("413", "TooLarge", "The body is larger than the API takes."),
    ("415", "NotJson", "The body is not JSON."),
    (
        "422",
        "Unusable",
        "A value is out of range or unusable: the message names it.",
    ),
    (
        "429",
        "TooMany",
        "Too many attempts; `details.retryAfterSeconds` says when to try again.",
    ),
    (
        "500",
        "Failed",
        "The node failed; the trace id finds it in the log.",
    ),
    (
        "503",
        "Unavailable",
        "A part the request needs is not running.",
    ),
];

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(json_ref("Error")))
                .build(),
        )
        .build()
}

fn method_of(m: &Method) -> HttpMethod {
    match *m {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::PATCH => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

/// The `{name}` segments of a route's path.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn operation(spec: &RouteSpec, doc: &Doc) -> Operation {
    let write = spec.method != Method::GET;
    let mut op = OperationBuilder::new()
        .tag(doc.tag)
        .summary(Some(doc.summary))
        .description(doc.description)
        .operation_id(Some(operation_id(spec)));
    for name in path_params(spec.path) {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(RefOr::T(Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .build(),
                )))),
        );
    }
    for p in &doc.query {
        op = op.parameter(p.clone());
    }
    if let Some(body) = &doc.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(json_ref(body))).build(),
                )
                .build(),
        ));
    }
    if doc.xml_body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "text/xml",
                    ContentBuilder::new()
                        .schema(Some(RefOr::T(Schema::Object(
                            ObjectBuilder::new().schema_type(Type::String).build(),
                        ))))
                        .build(),
                )
                .build(),
        ));
    }
    let (media, schema) = match &doc.answer {
        Answer::Object => ("application/json", any_object()),
        Answer::Json(name) => ("application/json", json_ref(name)),
        // One event of the stream: its name and its data (JSON text).
        Answer::EventStream => (
            "text/event-stream",
            RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("event", ObjectBuilder::new().schema_type(Type::String))
                    .property("data", ObjectBuilder::new().schema_type(Type::String))
                    .property("id", ObjectBuilder::new().schema_type(Type::String))
                    .required("data")
                    .build(),
            )),
        ),
        Answer::Csv => (
            "text/csv",
            RefOr::T(Schema::Object(
                ObjectBuilder::new().schema_type(Type::String).build(),
            )),
        ),
        Answer::Xml => (
            "text/xml",
            RefOr::T(Schema::Object(
                ObjectBuilder::new().schema_type(Type::String).build(),
            )),
        ),
        Answer::Text => (
            "text/plain",
            RefOr::T(Schema::Object(
                ObjectBuilder::new().schema_type(Type::String).build(),
            )),
        ),
    };
    op = op.response(
        "200",
        ResponseBuilder::new()
            .description("Done.")
            .content(media, ContentBuilder::new().schema(Some(schema)).build())
            .build(),
    );
    let mut errors: Vec<&(&str, &str, &str)> = STANDARD_ERRORS
        .iter()
        .filter(|(code, _, _)| match *code {
            "401" | "403" => !matches!(spec.access, Access::Public),
            "415" => write || matches!(spec.access, Access::Public),
            _ => true,
        })
        .collect();
    errors.sort_by_key(|(code, _, _)| *code);
    for (code, name, _) in errors {
        op = op.response(
            *code,
            RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))),
        );
    }
    for (code, text) in &doc.statuses {
        op = op.response(*code, error_response(text));
    }
    match spec.access {
        Access::Public => {}
        Access::Session | Access::User => {
            op = op.security(SecurityRequirement::new("session", Vec::<String>::new()));
            if crate::http::token_may_use(spec.access, spec.path) {
                op = op.security(SecurityRequirement::new("token", Vec::<String>::new()));
            }
        }
        Access::Allowed(p) => {
            op = op
                .security(SecurityRequirement::new("session", Vec::<String>::new()))
                .security(SecurityRequirement::new("token", Vec::<String>::new()));
            let mut ext = utoipa::openapi::extensions::Extensions::default();
            ext.insert("x-permission".into(), serde_json::json!(p.as_str()));
            op = op.extensions(Some(ext));
        }
    }
    op.build()
}

/// `get_api_v1_points_device_point`: unique per method and path, stable across builds.
fn operation_id(spec: &RouteSpec) -> String {
    let mut id = spec.method.as_str().to_ascii_lowercase();
    for seg in spec.path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            seg.chars()
                .filter(|c| *c != '{' && *c != '}')
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// Documents the route added last.
    pub fn doc(mut self, doc: Doc) -> Self {
        if let Some((spec, _)) = self.list.last() {
            self.docs.insert((spec.method.clone(), spec.path), doc);
        }
        self
    }

    /// The routes that have no [`Doc`].
    pub fn undocumented(&self) -> Vec<RouteSpec> {
        self.list
            .iter()
            .filter(|(s, _)| !self.docs.contains_key(&(s.method.clone(), s.path)))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// The OpenAPI 3.1 document of these routes: every route, with or without a [`Doc`]
    /// (one without gets its path, method and requirement and nothing more).
    pub fn openapi(&self, title: &str, version: &str, description: &str) -> OpenApi {
        let mut paths = Paths::new();
        let mut schemas: BTreeMap<String, RefOr<Schema>> = BTreeMap::new();
        let mut error = Vec::new();
        <ErrorBody as ToSchema>::schemas(&mut error);
        schemas.insert(
            "Error".into(),
            <ErrorBody as utoipa::PartialSchema>::schema(),
        );
        for (spec, _) in &self.list {
            let fallback;
            let doc = match self.docs.get(&(spec.method.clone(), spec.path)) {
                Some(d) => d,
                None => {
                    fallback = Doc::new("other", "(undocumented)");
                    &fallback
                }
            };
            for (name, schema) in &doc.schemas {
                schemas
                    .entry(name.clone())
                    .or_insert_with(|| schema.clone());
            }
            let op = operation(spec, doc);
            let item = PathItem::new(method_of(&spec.method), op);
            match paths.paths.get_mut(spec.path) {
                Some(existing) => existing.merge_operations(item),
                None => {
                    paths.paths.insert(spec.path.to_string(), item);
                }
            }
        }
        let mut components = ComponentsBuilder::new()
            .security_scheme(
                "session",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    SESSION_COOKIE,
                    &*Cow::Owned(format!(
                        "The session from POST /api/v1/auth/login; writes also send its csrfToken in the {CSRF_HEADER} header."
                    )),
                ))),
            )
            .security_scheme(
                "token",
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("An API token (POST /api/v1/auth/tokens)."))
                        .build(),
                ),
            );
        for (name, schema) in schemas {
            components = components.schema(name, schema);
        }
        for (_, name, text) in STANDARD_ERRORS {
            components = components.response(*name, error_response(text));
        }
        OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title(title)
                    .version(version)
                    .description(Some(description)),
            )
            .paths(paths)
            .components(Some(components.build()))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_missing_a_route_or_its_requirement_is_reported() {
        use park_model::identity::Permission;
        let route = |m: Method, path: &'static str, access| RouteSpec {
            method: m,
            path,
            access,
        };
        let doc = serde_json::json!({"paths": {"/api/v1/doors/{id}/open": {"post": {
            "summary": "Open", "operationId": "open",
            "parameters": [{"name": "id", "in": "path"}],
            "security": [{}], "x-permission": "doors.open"
        }}}});
        let open = route(
            Method::POST,
            "/api/v1/doors/{id}/open",
            Access::Allowed(Permission::DoorsOpen),
        );
        assert!(check_document(&doc, std::slice::from_ref(&open)).is_empty());
        let wrong = route(
            Method::POST,
            "/api/v1/doors/{id}/open",
            Access::Allowed(Permission::PointsWrite),
        );
        assert_eq!(check_document(&doc, &[wrong]).len(), 1);
        let missing = route(Method::GET, "/api/v1/doors", Access::Public);
        assert_eq!(
            check_document(&doc, &[open, missing]),
            ["GET /api/v1/doors is missing from the document"]
        );
    }

    #[test]
    fn operation_ids_are_unique_per_method_and_path() {
        let spec = |m: Method, p: &'static str| RouteSpec {
            method: m,
            path: p,
            access: Access::Public,
        };
        assert_eq!(
            operation_id(&spec(Method::GET, "/api/v1/points/{device}/{point}")),
            "get_api_v1_points_device_point"
        );
        assert_ne!(
            operation_id(&spec(Method::GET, "/api/v1/auth/tokens")),
            operation_id(&spec(Method::POST, "/api/v1/auth/tokens"))
        );
        assert_eq!(path_params("/a/{x}/b/{y}").collect::<Vec<_>>(), ["x", "y"]);
    }
}
