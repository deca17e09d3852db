//! TUN offload reads (a virtio-net header and a super-packet) split into production batch
//! slots: no panic, every segment fits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::tun_super_packet(data);
});
