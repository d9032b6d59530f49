//! The binary's handling of config files: errors that name file, line, key and reason.

use std::process::Command;

use crate::support::{edge_binary, repo};

#[test]
fn a_bad_config_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    let profiles = repo().join("firmware-configs/profiles");
    std::fs::write(
        &file,
        format!("[node]\npark = \"p\"\nbuilding = \"b\"\ndata_dir = \"d\"\nprofiles_dir = \"{}\"\n[storage]\ndisk_budget_mb = \"lots\"\n", profiles.display()),
    )
    .unwrap();
    let out = Command::new(edge_binary())
        .args(["edge", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:7: storage.disk_budget_mb: ", file.display())),
        "{err}"
    );
}

#[test]
fn generate_config_prints_a_config_that_check_config_accepts() {
    let out = Command::new(edge_binary())
        .arg("generate-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    // The default config names the profiles relative to the repository root.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("generated.toml");
    let text = String::from_utf8(out.stdout).unwrap().replace(
        "profiles_dir = \"firmware-configs/profiles\"",
        &format!(
            "profiles_dir = \"{}\"",
            repo().join("firmware-configs/profiles").display()
        ),
    );
    std::fs::write(&file, text).unwrap();
    let out = Command::new(edge_binary())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
}
