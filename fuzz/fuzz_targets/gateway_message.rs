#![no_main]
// What this target checks: keyway::fuzz::gateway_message.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::gateway_message(data));
