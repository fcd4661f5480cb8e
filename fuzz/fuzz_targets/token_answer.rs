#![no_main]
// What this target checks: keyway::fuzz::token_answer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::token_answer(data));
