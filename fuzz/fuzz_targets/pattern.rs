#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgewire_agent::fuzzing::pattern(data));
