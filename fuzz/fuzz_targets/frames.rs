//! Every codec parser on arbitrary bytes: the first byte picks frame_max
//! (even: 4096, odd: 131072), the rest is split into frames and each
//! payload goes through every method and header parser
//! (`testing::run_frames_input`, which tests/reader_fuzz.rs replays too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    resilient_amqp::testing::run_frames_input(data);
});
