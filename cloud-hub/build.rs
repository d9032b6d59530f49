//! Embeds the hub console (`ui/hub-console/dist`, built by `npm run build` in `ui/`).
fn main() {
    ui_embed::embed("../ui/hub-console", "console_files.rs");
}
