//! Sequences of UAPI requests applied to a running tunnel: no panic, the configuration stays
//! valid and the status matches it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::uapi_sequence(data);
});
