#![no_main]
// What this target checks: keyway::fuzz::registration_answer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::registration_answer(data));
