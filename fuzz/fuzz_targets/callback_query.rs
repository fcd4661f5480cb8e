#![no_main]
// What this target checks: keyway::fuzz::callback_query.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::callback_query(data));
