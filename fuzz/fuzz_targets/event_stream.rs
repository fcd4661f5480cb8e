#![no_main]
// What this target checks: keyway::fuzz::event_stream.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzz::event_stream(data));
