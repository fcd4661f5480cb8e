#![no_main]
// What this target checks: keyway::fuzz::www_authenticate.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::www_authenticate(data));
