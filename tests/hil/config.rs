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

/// `smartpark check-config` on a site config of one Modbus device whose profile is `profile`;
/// returns whether it passed and its standard error.
fn check_config(dir: &std::path::Path, profile: &str, device: &str) -> (bool, String) {
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("meter.toml"), profile).unwrap();
    let file = dir.join("site.toml");
    std::fs::write(
        &file,
        format!(
            "[node]\npark = \"p\"\nbuilding = \"b\"\ndata_dir = \"d\"\nprofiles_dir = \"{}\"\n\n\
             [business]\nenabled = false\n\n{device}",
            profiles.display()
        ),
    )
    .unwrap();
    let out = Command::new(edge_binary())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const METER: &str = "id = \"meter\"\nprotocol = \"modbus\"\nmanufacturer = \"A\"\nmodel = \"M\"\nsource = \"test\"\n\n\
                     [[point]]\nname = \"power\"\ntable = \"holding\"\naddress = 40101\ntype = \"u16\"\n\n\
                     [[point]]\nname = \"energy\"\ntable = \"holding\"\naddress = 3\ntype = \"u32\"\n";

const DEVICE: &str =
    "[[device]]\nid = \"m1\"\nprofile = \"meter\"\nmodbus_tcp = { address = \"127.0.0.1:502\" }\n";

#[test]
fn check_config_warns_of_register_numbers_and_gives_lines_for_missing_keys_and_duplicate_points() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profiles/meter.toml");

    // An address that looks like a register number is a warning, not an error.
    let (ok, err) = check_config(dir.path(), METER, DEVICE);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!(
            "{}:10: point[0].address: 40101 looks like a register number (holding register \
             101 counted from 1); addresses count from 0, so that register is address 100",
            profile.display()
        )),
        "{err}"
    );

    // A point defined twice: the line of each.
    let twice = METER.replace("name = \"energy\"", "name = \"power\"");
    let (ok, err) = check_config(dir.path(), &twice, DEVICE);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}:14: point[1].name: point \"power\" is defined twice (first as point[0], line 8)",
            profile.display()
        )),
        "{err}"
    );

    // A missing key, in the profile and in the site config: the line of the table lacking it.
    let (ok, err) = check_config(dir.path(), &METER.replace("type = \"u32\"\n", ""), DEVICE);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}:13: point[1].type: required for register points",
            profile.display()
        )),
        "{err}"
    );
    let (ok, err) = check_config(
        dir.path(),
        METER,
        &DEVICE.replace("profile = \"meter\"\n", ""),
    );
    assert!(!ok);
    let site = dir.path().join("site.toml");
    assert!(
        err.contains(&format!(
            "{}:10: device[0]: missing key `profile`",
            site.display()
        )),
        "{err}"
    );
}
