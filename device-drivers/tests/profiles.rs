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

#[test]
fn the_bacnet_profiles_map_standard_objects() {
    use device_drivers::profile::{BacnetObjectType, PointSource};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/profiles");
    let profiles = load_profiles(&dir).unwrap_or_else(|e| panic!("{e}"));
    let object = |profile: &str, point: &str| match &profiles[profile]
        .point(point)
        .unwrap_or_else(|| panic!("no point {point} in {profile}"))
        .source
    {
        PointSource::Bacnet(b) => (b.object_type, b.instance, b.cov, b.priority),
        other => panic!("{other:?}"),
    };
    for id in [
        "generic-bacnet-ahu",
        "generic-bacnet-vav",
        "generic-bacnet-chiller-plant-meter",
    ] {
        assert_eq!(profiles[id].protocol, Protocol::Bacnet, "{id}");
    }
    assert_eq!(
        object("generic-bacnet-ahu", "supply_air_temp"),
        (BacnetObjectType::AnalogInput, 1, true, 8)
    );
    assert_eq!(
        object("generic-bacnet-ahu", "supply_air_temp_setpoint"),
        (BacnetObjectType::AnalogValue, 1, false, 8)
    );
    assert!(
        profiles["generic-bacnet-ahu"]
            .point("supply_fan_start")
            .unwrap()
            .writable
    );
    assert_eq!(
        object("generic-bacnet-vav", "occupancy_override"),
        (BacnetObjectType::BinaryValue, 1, false, 8)
    );
    let meter = &profiles["generic-bacnet-chiller-plant-meter"];
    assert!(
        meter.points.iter().all(|p| !p.writable),
        "a meter is read-only"
    );
    assert_eq!(
        meter.point("cooling_energy").unwrap().kind,
        device_drivers::profile::PointKind::Counter
    );
}

#[test]
fn no_shipped_profile_has_a_warning() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/profiles");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&file).unwrap();
            let (_, warnings) =
                device_drivers::Profile::check(&file, &text).unwrap_or_else(|e| panic!("{e}"));
            assert!(warnings.is_empty(), "{warnings:?}");
        }
    }
}
