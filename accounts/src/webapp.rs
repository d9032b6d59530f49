//! A web app embedded in a binary (by the `ui-embed` crate at build time), served at every
//! path that is not an API route: a file by its path, and the app's `index.html` for its
//! own routes (`/points/...`), so a reload or a bookmark opens the right page. The files
//! are public (the app asks for a login itself); the API checks every request anyway.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::http::ApiError;

/// One file of a built app.
pub struct WebFile {
    /// Its path under the app's root, such as `assets/index-3f2a.js`.
    pub path: &'static str,
    pub mime: &'static str,
    pub bytes: &'static [u8],
    /// A gzip copy, for text files over 1 KiB.
    pub gzip: Option<&'static [u8]>,
}

/// Whether `files` hold a built app.
pub fn is_built(files: &[WebFile]) -> bool {
    files.iter().any(|f| f.path == "index.html")
}

/// Who may frame or feed the app: nobody but itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

/// Answers `uri` from `files`; `missing` is what a binary built without its app says.
pub fn serve(
    files: &'static [WebFile],
    missing: &'static str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path == "/api" {
        return ApiError::not_found("no such route").into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} takes GET"),
        )
        .into_response();
    }
    let rel = path.trim_start_matches('/');
    let file = files.iter().find(|f| f.path == rel).or_else(|| {
        // The app's own routes have no extension; a missing asset stays a 404.
        let last = rel.rsplit('/').next().unwrap_or("");
        (!last.contains('.'))
            .then(|| files.iter().find(|f| f.path == "index.html"))
            .flatten()
    });
    let Some(&WebFile {
        path: name,
        mime,
        bytes,
        gzip: gz,
    }) = file
    else {
        if !is_built(files) {
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                missing,
            )
                .into_response();
        }
        return ApiError::not_found(format!("no file {path}")).into_response();
    };
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let (body, encoded) = match gz {
        Some(gz) if gzip_ok => (gz, true),
        _ => (bytes, false),
    };
    let mut response = if *method == Method::HEAD {
        ().into_response()
    } else {
        body.into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if gz.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    // Built assets carry their content hash in their names; the page itself does not.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The module of an app embedded by `ui_embed::embed(app, FILE)` in the crate's build
/// script: its `FILES`, `is_built()`, and `serve`, the router's fallback; `missing` is what
/// a binary built without the app answers at `/`.
#[macro_export]
macro_rules! embedded_app {
    ($file:literal, $missing:literal) => {
        use $crate::webapp::WebFile;

        include!(concat!(env!("OUT_DIR"), "/", $file));

        /// Whether the app was built into this binary.
        pub fn is_built() -> bool {
            $crate::webapp::is_built(FILES)
        }

        pub async fn serve(
            method: axum::http::Method,
            uri: axum::http::Uri,
            headers: axum::http::HeaderMap,
        ) -> axum::response::Response {
            $crate::webapp::serve(FILES, $missing, &method, &uri, &headers)
        }
    };
}
