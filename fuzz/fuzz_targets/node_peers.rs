//! Node → peer mapping on arbitrary nodes and annotation values: no panic, peers stay
//! inside the pod subnet, keys unique.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control::fuzzing::node_peers(data);
});
