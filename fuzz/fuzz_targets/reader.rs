//! The reader's state machine after a valid handshake: channels 1..=3 open,
//! each with a consumer tagged "probe", fed an arbitrary byte stream in
//! chunks (`testing::run_reader_input`, which tests/reader_fuzz.rs replays
//! too), on a 1 MiB stack. Input layout: byte 0 picks frame_max (even:
//! 4096, odd: 131072), byte 1 seeds the chunk sizes, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resilient_amqp_fuzz::on_small_stack;

fuzz_target!(|data: &[u8]| {
    on_small_stack(data, |data| {
        if let Some(probe) = resilient_amqp::testing::run_reader_input(data) {
            let _ = (probe.deliveries(), probe.confirms(), probe.output_len());
        }
    });
});
