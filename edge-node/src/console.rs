//! The edge console's files, embedded at build time (see `build.rs`) and served by
//! [`accounts::webapp`] at every path that is not an API route.

use accounts::webapp::WebFile;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

/// Whether the console was built into this binary.
pub fn is_built() -> bool {
    accounts::webapp::is_built(FILES)
}

pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    accounts::webapp::serve(
        FILES,
        "The edge console is not built into this binary: run scripts/build-ui (the demo script does), then build smartpark again.\n",
        &method,
        &uri,
        &headers,
    )
}
