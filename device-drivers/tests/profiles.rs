//! Every profile shipped in `firmware-configs/profiles/` loads and has points.

use std::path::Path;

use device_drivers::profile::{Protocol, load_profiles};

#[test]
fn every_shipped_profile_loads_and_has_points() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/profiles");
    let profiles = load_profiles(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!profiles.is_empty(), "no profiles in {}", dir.display());
    for (id, profile) in &profiles {
        assert!(!profile.points.is_empty(), "profile {id} has no points");
        assert!(
            !profile.source.trim().is_empty(),
            "profile {id} does not say where its map comes from"
        );
    }
}

#[test]
fn profiles_are_named_after_their_id() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/profiles");
    let profiles = load_profiles(&dir).unwrap_or_else(|e| panic!("{e}"));
    for id in profiles.keys() {
        assert!(
            dir.join(format!("{id}.toml")).is_file(),
            "profile {id} is not in {id}.toml"
        );
    }
}

#[test]
fn the_xy_md02_profile_matches_its_register_map() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/profiles");
    let profiles = load_profiles(&dir).unwrap_or_else(|e| panic!("{e}"));
    let p = &profiles["xymd02-th-sensor"];
    assert_eq!(p.protocol, Protocol::Modbus);
    let address = |name: &str| match &p
        .point(name)
        .unwrap_or_else(|| panic!("no point {name}"))
        .source
    {
        device_drivers::profile::PointSource::Modbus(m) => (m.table, m.address, m.data_type),
        other => panic!("{other:?}"),
    };
    use device_drivers::profile::{DataType, RegisterTable};
    assert_eq!(
        address("temperature"),
        (RegisterTable::Input, 1, DataType::I16)
    );
    assert_eq!(
        address("humidity"),
        (RegisterTable::Input, 2, DataType::U16)
    );
    assert_eq!(
        address("temperature_correction"),
        (RegisterTable::Holding, 0x0103, DataType::I16)
    );
    assert_eq!(
        address("humidity_correction"),
        (RegisterTable::Holding, 0x0104, DataType::I16)
    );
    assert!(p.point("temperature_correction").unwrap().writable);
}
