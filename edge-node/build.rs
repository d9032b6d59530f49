//! Embeds the edge console (`ui/edge-console/dist`, built by `npm run build` in `ui/`).
fn main() {
    ui_embed::embed("../ui/edge-console", "console_files.rs");
}
