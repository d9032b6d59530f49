#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| smartpark_fuzz::mqtt_payload(data));
