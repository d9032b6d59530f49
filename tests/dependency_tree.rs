//! The dependency tree stays within what the project allows: TLS, when any crate brings it,
//! is rustls with the ring provider; no aws-lc and no OpenSSL.

#[test]
fn no_aws_lc_or_openssl_is_in_the_lock_file() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let names: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .collect();
    assert!(names.len() > 50, "the lock file lists the packages");
    for banned in [
        "aws-lc-rs",
        "aws-lc-sys",
        "openssl",
        "openssl-sys",
        "native-tls",
    ] {
        assert!(!names.contains(&banned), "{banned} is in Cargo.lock");
    }
}
