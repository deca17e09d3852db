//! Datagrams for an established session (sealed by the peer, forged or tampered): no panic, and
//! only what the peer sealed reaches the TUN, with an allowed inner source.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::inbound_session(data);
});
