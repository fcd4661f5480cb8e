#![no_main]
// What this target checks: keyway::fuzz::bridge_line.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::bridge_line(data));
