//! Embeds a built web app in a binary, from its crate's `build.rs`:
//!
//! ```ignore
//! fn main() { ui_embed::embed("../ui/edge-console", "console_files.rs"); }
//! ```
//!
//! writes `$OUT_DIR/<name>`, a `pub static FILES: &[WebFile]` of every file under the
//! app's `dist/` with its content type and, for text over 1 KiB, a gzip copy, to be
//! `include!`d where `WebFile` (`accounts::webapp::WebFile`) is in scope. Without a built
//! app the list is empty and the binary says how to build it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Embeds `app` (relative to the calling crate's manifest) into `$OUT_DIR/<name>`.
pub fn embed(app: &str, name: &str) {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let app = manifest.join(app);
    let dist = app.join("dist");
    // A directory is scanned whole: a new build of the app re-embeds it.
    if dist.is_dir() {
        println!("cargo:rerun-if-changed={}", dist.display());
    } else if app.is_dir() {
        println!("cargo:rerun-if-changed={}", app.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let stem = name.trim_end_matches(".rs");
    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut code = String::from("/// The app's files.\npub static FILES: &[WebFile] = &[\n");
    for (i, rel) in files.iter().enumerate() {
        let path = dist.join(rel);
        let bytes = std::fs::read(&path).expect("a file of the built app");
        let mime = content_type(rel);
        let gz = if compressible(mime) && bytes.len() > 1024 {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&bytes).expect("gzip in memory");
            let gz = enc.finish().expect("gzip in memory");
            let gz_name = format!("{stem}-{i}.gz");
            std::fs::write(out.join(&gz_name), &gz).expect("OUT_DIR is writable");
            format!("Some(include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{gz_name}\")))")
        } else {
            "None".to_string()
        };
        code.push_str(&format!(
            "    WebFile {{ path: {rel:?}, mime: {mime:?}, bytes: include_bytes!({path:?}), gzip: {gz} }},\n",
            path = path.canonicalize().expect("the file exists")
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join(name), code).expect("OUT_DIR is writable");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("the app's folder is readable") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(rel) = path.strip_prefix(root) {
            files.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(mime: &str) -> bool {
    mime.starts_with("text/") || mime.contains("json") || mime.contains("svg")
}
