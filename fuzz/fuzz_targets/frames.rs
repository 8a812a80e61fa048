//! Every codec parser on arbitrary bytes: the first byte picks frame_max
//! (even: 4096, odd: 131072), the rest is split into frames and each
//! payload goes through every method and header parser
//! (`testing::run_frames_input`, which tests/reader_fuzz.rs replays too),
//! on a 1 MiB stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resilient_amqp_fuzz::on_small_stack;

fuzz_target!(|data: &[u8]| {
    on_small_stack(data, |data| {
        resilient_amqp::testing::run_frames_input(data);
    });
});
