//! The hub console's files, embedded at build time (see `build.rs`) and served by
//! [`accounts::webapp`] at every path that is not an API route.

accounts::embedded_app!(
    "console_files.rs",
    "The hub console is not built into this binary: run scripts/build-ui (the demo script does), then build smartpark again.\n"
);
