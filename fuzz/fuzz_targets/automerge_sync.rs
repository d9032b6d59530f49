#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| smartpark_fuzz::automerge_sync(data));
