//! Every fuzz target on its committed crashers (`fuzz/crashers/TARGET/`) and its seeds, as
//! an ordinary test: an input that once crashed a decoder stays fixed.

#[test]
fn every_crasher_and_seed_is_decoded_without_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crashers");
    let mut replayed = 0;
    for (target, run) in smartpark_fuzz::TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            run(&bytes);
            replayed += 1;
        }
    }
    for (target, _, bytes) in smartpark_fuzz::seeds() {
        let (_, run) = smartpark_fuzz::TARGETS
            .iter()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("a seed names no target: {target}"));
        run(&bytes);
    }
    println!("replayed {replayed} crashers");
}

#[test]
fn every_target_has_its_libfuzzer_entry_point() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    for (target, _) in smartpark_fuzz::TARGETS {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{target}.rs\"")),
            "{target} has no [[bin]] in fuzz/Cargo.toml"
        );
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(file.exists(), "{} is missing", file.display());
    }
}
