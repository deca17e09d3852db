//! UAPI request parser: no panic, `set` round-trips, merged configs stay valid.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::uapi_request(data);
});
