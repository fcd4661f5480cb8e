#![no_main]
// What this target checks: keyway::fuzz::server_metadata.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::server_metadata(data));
