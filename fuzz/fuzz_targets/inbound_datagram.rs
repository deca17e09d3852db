//! Datagrams (2-byte little-endian length prefix each) into a configured interface: no
//! panic, and nothing unauthenticated reaches the TUN.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::inbound_datagrams(data);
});
