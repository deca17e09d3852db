//! The clusters config parser: no panic; accepted configs keep their invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control::fuzzing::config_parse(data);
});
