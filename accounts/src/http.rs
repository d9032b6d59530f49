//! The HTTP side of accounts, shared by the edge's LAN API and the hub's API: the route
//! table type, the checks every matched request passes ([`Authorize`]: Host and Origin,
//! session or token, CSRF, and the route's requirement at its scope), and the routes of
//! logging in, out, the caller's own account, second factor and API tokens ([`auth_routes`]).
//!
//! A binary declares each of its routes once with [`Routes`], builds its router from that
//! table, and says how a matched route's scope is found ([`ApiAuth::scope_of`]): an edge
//! serves one building; the hub derives a park or building from the path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, MatchedPath, Path, RawPathParams, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Extension, Json};
use park_model::identity::web;
use park_model::identity::{Access, PermissionSet, Scope, SecondFactor};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::auth::{Auth, AuthError, Caller};

/// An API error as the client sees it: `{"code", "message", "details", "traceId"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Json_,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Json_::Null,
        }
    }

    pub fn with_details(mut self, details: Json_) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    pub fn internal(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "API request failed.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed inside the server; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message, "details": self.details, "traceId": format!("{:016x}", fastrand::u64(..))});
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), "invalid_body", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                e.to_string(),
            ),
            AuthError::SecondFactorRequired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "second_factor_required",
                e.to_string(),
            ),
            AuthError::Locked(s) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "locked_out", e.to_string())
                    .with_details(json!({"retryAfterSeconds": s}))
            }
            AuthError::Invalid(m) => ApiError::invalid(m),
            AuthError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AuthError::NotFound(m) => ApiError::not_found(m),
            AuthError::Store(e) => ApiError::internal(e),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// One route and what it requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// A table of routes under construction: each added with its requirement, once, and
/// documented with [`Routes::doc`].
pub struct Routes<S> {
    pub list: Vec<(RouteSpec, MethodRouter<S>)>,
    pub(crate) docs: HashMap<(Method, &'static str), crate::openapi::Doc>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            list: Vec::new(),
            docs: HashMap::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    fn add<H, T>(mut self, method: Method, path: &'static str, access: Access, h: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = if method == Method::POST {
            axum::routing::post(h)
        } else if method == Method::PUT {
            axum::routing::put(h)
        } else if method == Method::DELETE {
            axum::routing::delete(h)
        } else {
            axum::routing::get(h)
        };
        self.list.push((
            RouteSpec {
                method,
                path,
                access,
            },
            mr,
        ));
        self
    }

    /// Lets the route added last take request bodies of up to `bytes` (the API's other
    /// routes take at most 64 KiB): for a file people upload.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        if let Some((spec, mr)) = self.list.pop() {
            self.list
                .push((spec, mr.layer(axum::extract::DefaultBodyLimit::max(bytes))));
        }
        self
    }

    pub fn get<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.add(Method::GET, path, access, h)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.add(Method::POST, path, access, h)
    }

    pub fn put<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.add(Method::PUT, path, access, h)
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.add(Method::DELETE, path, access, h)
    }

    /// The API's router: every route behind [`Authorize`], an API error for any other path,
    /// and request bodies of at most 64 KiB.
    pub fn into_api_router(self, state: S) -> axum::Router<S>
    where
        S: ApiAuth,
    {
        self.into_api_router_with(state, || async { ApiError::not_found("no such route") })
    }

    /// [`Routes::into_api_router`] with `fallback` answering every path that is not a
    /// route (a web app's files): it is public, so it must serve nothing but public files.
    pub fn into_api_router_with<H, T>(self, state: S, fallback: H) -> axum::Router<S>
    where
        S: ApiAuth,
        H: Handler<T, S>,
        T: 'static,
    {
        let (app, _) = self.into_router();
        app.route_layer(axum::middleware::from_fn(catch_panic))
            .route_layer(Authorize::new(state))
            .fallback(fallback)
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
    }

    /// The routes without their handlers.
    pub fn specs(&self) -> Vec<RouteSpec> {
        self.list.iter().map(|(s, _)| s.clone()).collect()
    }

    /// The router of these routes, to be put behind [`Authorize`] ([`Routes::into_api_router`] does).
    pub fn into_router(self) -> (axum::Router<S>, Arc<RouteIndex>)
    where
        S: ApiAuth,
    {
        let index = Arc::new(RouteIndex::new(&self.specs()));
        let mut app = axum::Router::new();
        for (spec, mr) in self.list {
            app = app.route(spec.path, mr);
        }
        (app, index)
    }
}

/// Whether an API token may be used on a route: on every route that needs a permission,
/// and to ask who it is; never on the routes that manage the account itself (password,
/// second factor, sessions, tokens), which need a logged-in person.
pub fn token_may_use(access: Access, path: &str) -> bool {
    match access {
        Access::Public | Access::Allowed(_) => true,
        Access::Session | Access::User => path == "/api/v1/auth/me",
    }
}

/// A handler that panics answers 500 like any other failure (logged with the panic's
/// message) instead of dropping the connection; the process goes on either way.
async fn catch_panic(req: Request, next: axum::middleware::Next) -> Response {
    use futures_util::FutureExt as _;
    let path = req.uri().path().to_string();
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ApiError::internal(anyhow::anyhow!("a handler for {path} panicked: {message}"))
                .into_response()
        }
    }
}

/// What each route requires, by method and matched path.
#[derive(Debug, Default)]
pub struct RouteIndex {
    table: HashMap<(Method, &'static str), Access>,
}

impl RouteIndex {
    pub fn new(specs: &[RouteSpec]) -> RouteIndex {
        RouteIndex {
            table: specs
                .iter()
                .map(|r| ((r.method.clone(), r.path), r.access))
                .collect(),
        }
    }

    /// The methods a path takes (for a 405's `Allow`), sorted; empty for an unknown path.
    pub fn methods(&self, path: &str) -> Vec<&'static str> {
        let mut m: Vec<&'static str> = self
            .table
            .keys()
            .filter(|(_, p)| *p == path)
            .map(|(m, _)| match *m {
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::DELETE => "DELETE",
                Method::PATCH => "PATCH",
                _ => "GET",
            })
            .collect();
        m.sort_unstable();
        m
    }

    pub fn access(&self, method: &Method, path: &str) -> Option<Access> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.table.get(&(method.clone(), path)).copied()
    }
}

/// Where a matched route acts, for its permission check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteScope {
    /// The API's own scope (the building of an edge, the operator on the hub).
    Own,
    /// A scope named by the path (`/parks/{park}/buildings/{building}/...`), taken from
    /// the path as written: a name nobody holds a grant for is refused like any other.
    At(Scope),
    /// Anywhere the caller holds the permission: a list the handler filters row by row.
    Anywhere,
    /// Anywhere within this park (the park, one of its buildings or enterprises): a list
    /// of the park's that the handler filters row by row.
    Within(String),
}

impl RouteScope {
    /// Whether `access` lets `p` through at this scope; `own` is the API's own scope.
    pub fn allows(&self, access: Access, p: &park_model::identity::Principal, own: &Scope) -> bool {
        match (access, self) {
            (Access::Allowed(perm), RouteScope::Anywhere) => {
                p.second_factor == SecondFactor::Satisfied
                    && p.permissions_anywhere().contains(perm)
            }
            (Access::Allowed(perm), RouteScope::Within(park)) => {
                p.can_somewhere_in(perm, &park[..])
            }
            (_, RouteScope::At(scope)) => access.allows(Some(p), scope),
            (_, _) => access.allows(Some(p), own),
        }
    }
}

/// What an API's state gives the checks.
pub trait ApiAuth: Clone + Send + Sync + 'static {
    fn auth(&self) -> &Auth;
    fn routes(&self) -> &RouteIndex;
    /// Where a matched route acts, from its path and parameters.
    fn scope_of(&self, path: &str, params: &[(&str, &str)]) -> RouteScope;
}

/// The client's address, as the listener saw it.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub Option<SocketAddr>);

impl Client {
    pub fn text(&self) -> String {
        self.0.map(|a| a.ip().to_string()).unwrap_or_default()
    }
}

pub fn is_write(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a request may be looked at at all: its Host must name this server (no DNS
/// rebinding) and a write's Origin must be its own.
fn refuse_host_or_origin(auth: &Auth, method: &Method, headers: &HeaderMap) -> Option<Response> {
    let settings = auth.settings();
    let host = header_str(headers, header::HOST);
    if !web::host_allowed(host, &settings.allowed_hosts) {
        auth.metrics().bad_host_total.fetch_add(1, Relaxed);
        return Some(
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "bad_host",
                "the Host header does not name this server; add the name to allowed_hosts in the config",
            )
            .into_response(),
        );
    }
    if is_write(method)
        && !web::origin_allowed(
            header_str(headers, header::ORIGIN),
            host,
            &settings.allowed_origins,
        )
    {
        auth.metrics().bad_origin_total.fetch_add(1, Relaxed);
        return Some(
            ApiError::new(
                StatusCode::FORBIDDEN,
                "bad_origin",
                "writes are accepted only from this server's own pages (or allowed_origins in the config)",
            )
            .into_response(),
        );
    }
    None
}

/// Every matched route: its Host and Origin first, then the caller from the session
/// cookie or the bearer token, checked against the route's requirement at its scope. A
/// write with a session cookie must carry the session's CSRF token. A refused write is
/// audited. The handlers find the [`Client`] and the [`Caller`] in the request.
///
/// A tower layer rather than `middleware::from_fn`: the checks are synchronous, so a
/// request that passes goes on to its handler with no boxed future and no clone of the
/// route in between (only a refusal that is audited waits on the store).
#[derive(Clone)]
pub struct Authorize<S> {
    state: S,
}

impl<S> Authorize<S> {
    pub fn new(state: S) -> Self {
        Authorize { state }
    }
}

impl<S: Clone, I> tower_layer::Layer<I> for Authorize<S> {
    type Service = Authorized<S, I>;

    fn layer(&self, inner: I) -> Self::Service {
        Authorized {
            state: self.state.clone(),
            inner,
        }
    }
}

/// A route behind [`Authorize`].
#[derive(Clone)]
pub struct Authorized<S, I> {
    state: S,
    inner: I,
}

type Refused = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

impl<S, I> tower_service::Service<Request> for Authorized<S, I>
where
    S: ApiAuth,
    I: tower_service::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<I::Future, Refused>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use futures_util::future::Either;
        match check_request(&self.state, req) {
            Ok(req) => Either::Left(self.inner.call(req)),
            Err(refusal) => {
                let auth = self.state.auth().clone();
                Either::Right(Box::pin(async move {
                    if let Some(audit) = refusal.audit
                        && let Err(e) = auth.record(*audit).await
                    {
                        tracing::error!(error = %format!("{e:#}"), "A refused request could not be audited.");
                    }
                    Ok(refusal.response)
                }))
            }
        }
    }
}

/// A request [`check_request`] refused: the answer, and the audit record of a refused write.
struct Refusal {
    response: Response,
    audit: Option<Box<crate::audit::Audit>>,
}

impl From<Response> for Refusal {
    fn from(response: Response) -> Self {
        Refusal {
            response,
            audit: None,
        }
    }
}

/// The checks of [`Authorize`]: the request with its [`Client`] and [`Caller`], or why not.
#[allow(
    clippy::result_large_err,
    reason = "the request that passes is as large; a refusal is rare"
)]
fn check_request<S: ApiAuth>(s: &S, req: Request) -> Result<Request, Refusal> {
    let auth = s.auth();
    if let Some(refused) = refuse_host_or_origin(auth, req.method(), req.headers()) {
        return Err(refused.into());
    }
    let (mut parts, body) = req.into_parts();
    let client = Client(
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    );
    parts.extensions.insert(client);
    // A clone of the matched path shares its string.
    let Some(matched) = parts.extensions.get::<MatchedPath>().cloned() else {
        return Ok(Request::from_parts(parts, body));
    };
    // The path's parameters, which axum has already matched (the extractor never waits).
    let params =
        futures_util::FutureExt::now_or_never(<RawPathParams as axum::extract::FromRequestParts<
            (),
        >>::from_request_parts(&mut parts, &()));
    let path = matched.as_str();
    let method = &parts.method;
    let Some(access) = s.routes().access(method, path) else {
        let allowed = s.routes().methods(path);
        if !allowed.is_empty() {
            let allow = allowed.join(", ");
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} takes {allow}"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, v);
            }
            return Err(response.into());
        }
        tracing::error!(%method, %path, "A route is missing from the route table; refused.");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "route_unlisted",
            "this route declares no permission, so nobody may use it",
        )
        .into_response()
        .into());
    };
    if access == Access::Public {
        return Ok(Request::from_parts(parts, body));
    }
    let headers = &parts.headers;
    let bearer = header_str(headers, header::AUTHORIZATION).and_then(web::bearer);
    let cookie =
        header_str(headers, header::COOKIE).and_then(|c| web::cookie(c, web::SESSION_COOKIE));
    let Some(caller) = auth.check(
        cookie,
        bearer,
        client.0.map(|a| a.ip()),
        crate::now_micros(),
    ) else {
        auth.metrics().unauthenticated_total.fetch_add(1, Relaxed);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "log in first (POST /api/v1/auth/login), or send an API token as Authorization: Bearer",
        )
        .into_response()
        .into());
    };
    if bearer.is_some() && !token_may_use(access, path) {
        auth.metrics().forbidden_total.fetch_add(1, Relaxed);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "session_required",
            "this acts on the account itself (its password, second factor, sessions or tokens): log in; an API token cannot",
        )
        .into_response()
        .into());
    }
    // A browser sends a cookie on its own; a write that relies on one must also prove it
    // comes from our page. A bearer token is never sent on its own.
    if bearer.is_none() && is_write(method) {
        let expected = cookie.map(|t| auth.csrf_for(t)).unwrap_or_default();
        let sent = header_str(headers, header::HeaderName::from_static(web::CSRF_HEADER));
        if !web::csrf_ok(sent, &expected) {
            auth.metrics().csrf_failures_total.fetch_add(1, Relaxed);
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a write with a session cookie needs the session's X-CSRF-Token header",
            )
            .into_response()
            .into());
        }
    }
    let pairs: Vec<(&str, &str)> = match &params {
        Some(Ok(p)) => p.iter().collect(),
        _ => Vec::new(),
    };
    let scope = s.scope_of(path, &pairs);
    if !scope.allows(access, &caller.principal, auth.scope()) {
        auth.metrics().forbidden_total.fetch_add(1, Relaxed);
        let at = match &scope {
            RouteScope::At(scope) => scope.to_string(),
            RouteScope::Anywhere => "any scope".to_string(),
            RouteScope::Within(park) => format!("park:{park} or within it"),
            RouteScope::Own => auth.scope().to_string(),
        };
        let message = match access {
            Access::Allowed(p) => format!("this needs the permission {p} in {at}"),
            _ => "set up a second factor first (POST /api/v1/auth/totp/setup)".to_string(),
        };
        let audit = is_write(method).then(|| {
            Box::new(
                auth.audit(
                    &caller.actor(),
                    "forbidden",
                    path,
                    json!({"method": method.as_str(), "needs": access.to_string(), "at": at}),
                )
                .with_outcome("refused: permission"),
            )
        });
        return Err(Refusal {
            response: ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
                .with_details(json!({"needs": access.to_string()}))
                .into_response(),
            audit,
        });
    }
    drop(pairs);
    drop(params);
    parts.extensions.insert(caller);
    Ok(Request::from_parts(parts, body))
}

/// The routes of logging in and of the caller's own account, under `/api/v1/auth`.
pub fn auth_routes<S: ApiAuth>(routes: Routes<S>) -> Routes<S> {
    use crate::openapi::Doc;
    use Access::{Public, Session, User};
    let doc = |summary| Doc::new("auth", summary);
    routes
        .post("/api/v1/auth/login", Public, login::<S>)
        .doc(doc("Log in: a session cookie and the CSRF token for writes").body::<LoginBody>().returns::<LoginAnswer>().status("401", "The username, password or code is wrong, or a second factor is needed.").describe(
            "Wrong passwords are counted per account and per client address; too many lock the account for a while (429 with the seconds to wait).",
        ))
        .post("/api/v1/auth/logout", Session, logout::<S>)
        .doc(doc("Log out of this session"))
        .post("/api/v1/auth/logout-all", Session, logout_all::<S>)
        .doc(doc("Log out of every session of this account"))
        .get("/api/v1/auth/me", Session, me::<S>)
        .doc(doc("Who is logged in, with roles and permissions").returns::<crate::auth::Me>())
        .post("/api/v1/auth/password", User, change_password::<S>)
        .doc(doc("Change one's own password").body::<PasswordBody>())
        .post("/api/v1/auth/totp/setup", Session, totp_setup::<S>)
        .doc(doc("Start setting up a second factor (TOTP): the secret and its otpauth URI").returns::<crate::auth::TotpSetup>())
        .post("/api/v1/auth/totp/confirm", Session, totp_confirm::<S>)
        .doc(doc("Confirm the second factor with a code: recovery codes, shown once").body::<CodeBody>().returns::<TotpConfirmed>())
        .get("/api/v1/auth/tokens", User, list_tokens::<S>)
        .doc(doc("One's own API tokens (never the secrets)"))
        .post("/api/v1/auth/tokens", User, create_token::<S>)
        .doc(doc("Make an API token with some of one's permissions: the secret, shown once").body::<NewToken>())
        .delete("/api/v1/auth/tokens/{id}", User, revoke_token::<S>)
        .doc(doc("Revoke one of one's own API tokens"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LoginBody {
    #[schema(min_length = 1, max_length = 64)]
    username: String,
    #[schema(max_length = 1024)]
    password: String,
    /// The one-time code from the authenticator app, when the account has one.
    code: Option<String>,
    /// Instead of a code: one of the account's recovery codes (each works once).
    recovery_code: Option<String>,
}

/// A session begun: who, the CSRF token its writes carry, and when it ends at the latest
/// (microseconds since 1970). The session itself is the HttpOnly cookie.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct LoginAnswer {
    user: Option<crate::auth::Me>,
    csrf_token: String,
    expires_at: i64,
}

/// A second factor switched on, with its recovery codes (shown once).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TotpConfirmed {
    enabled: bool,
    recovery_codes: Vec<String>,
}

fn set_cookie(auth: &Auth, value: &str, max_age: i64) -> [(header::HeaderName, HeaderValue); 1] {
    let cookie = web::session_cookie(value, auth.settings().secure_cookies, max_age);
    [(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("")),
    )]
}

async fn login<S: ApiAuth>(
    State(s): State<S>,
    Extension(client): Extension<Client>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body?;
    if b.username.is_empty() || b.username.len() > 64 || b.password.len() > 1024 {
        return Err(ApiError::invalid(
            "username must be 1 to 64 bytes and password at most 1024",
        ));
    }
    let auth = s.auth();
    let ok = auth
        .login(
            &b.username,
            &b.password,
            b.code.as_deref(),
            b.recovery_code.as_deref(),
            &client.text(),
            client.0.map(|a| a.ip()),
        )
        .await?;
    let max_age = auth.settings().session.absolute / 1_000_000;
    Ok((
        set_cookie(auth, &ok.token, max_age),
        Json(LoginAnswer {
            user: ok.me,
            csrf_token: ok.csrf,
            expires_at: ok.expires_at,
        }),
    )
        .into_response())
}

async fn logout<S: ApiAuth>(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    s.auth().logout(&caller).await?;
    Ok((
        set_cookie(s.auth(), "", 0),
        Json(json!({"loggedOut": true})),
    )
        .into_response())
}

async fn logout_all<S: ApiAuth>(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let n = s.auth().logout_all(&caller).await?;
    Ok((
        set_cookie(s.auth(), "", 0),
        Json(json!({"sessionsEnded": n})),
    )
        .into_response())
}

async fn me<S: ApiAuth>(
    State(s): State<S>,
    headers: HeaderMap,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<crate::auth::Me>> {
    let auth = s.auth();
    let pending = caller.principal.second_factor != SecondFactor::Satisfied;
    let mut me = auth
        .me_of(&caller.principal.user_id, pending)
        .ok_or_else(|| ApiError::not_found("the account is gone"))?;
    if caller.session.is_some() {
        let token =
            header_str(&headers, header::COOKIE).and_then(|c| web::cookie(c, web::SESSION_COOKIE));
        me.csrf_token = token.map(|t| auth.csrf_for(t));
    } else {
        me.permissions = auth
            .permissions_here(&caller.principal)
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        me.via = Some("token".into());
    }
    Ok(Json(me))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password<S: ApiAuth>(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<PasswordBody>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    s.auth()
        .change_password(&caller, &b.current_password, &b.new_password)
        .await?;
    Ok(Json(json!({"changed": true})))
}

async fn totp_setup<S: ApiAuth>(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<crate::auth::TotpSetup>> {
    Ok(Json(s.auth().totp_setup(&caller).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

async fn totp_confirm<S: ApiAuth>(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CodeBody>, JsonRejection>,
) -> ApiResult<Json<TotpConfirmed>> {
    let Json(b) = body?;
    let codes = s.auth().totp_confirm(&caller, &b.code).await?;
    Ok(Json(TotpConfirmed {
        enabled: true,
        recovery_codes: codes,
    }))
}

async fn list_tokens<S: ApiAuth>(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
) -> Json<Json_> {
    Json(json!({"tokens": s.auth().tokens_of(&caller.principal.user_id)}))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewToken {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[schema(schema_with = permission_names)]
    permissions: Vec<String>,
    #[serde(deserialize_with = "crate::openapi::whole::u32")]
    #[schema(minimum = 1, maximum = 365)]
    expires_in_days: u32,
}

fn permission_names() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Array(
        utoipa::openapi::ArrayBuilder::new()
            .items(crate::openapi::one_of(
                park_model::identity::Permission::ALL.map(|p| p.as_str()),
            ))
            .build(),
    ))
}

async fn create_token<S: ApiAuth>(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> ApiResult<Json<Json_>> {
    let Json(b) = body?;
    let perms =
        PermissionSet::parse(&b.permissions).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(Json(
        s.auth()
            .create_token(&caller, &b.name, perms, b.expires_in_days)
            .await?,
    ))
}

async fn revoke_token<S: ApiAuth>(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    s.auth().revoke_token(&caller, &id).await?;
    Ok(Json(json!({"revoked": id})))
}

/// Writes the audit record of an act that did not happen (refused or failed); an act
/// that happened wrote its record in its own transaction.
pub async fn audit_outcome<T>(
    auth: &Auth,
    audit: crate::Audit,
    result: ApiResult<T>,
) -> ApiResult<T> {
    if let Err(e) = &result {
        let outcome = if e.status.is_server_error() {
            format!("failed: {}", e.message)
        } else {
            format!("refused: {}", e.message)
        };
        auth.record(audit.with_outcome(outcome))
            .await
            .map_err(ApiError::internal)?;
    }
    result
}
