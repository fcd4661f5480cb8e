#![no_main]
// What this target checks: keyway::fuzz::resource_metadata.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::resource_metadata(data));
