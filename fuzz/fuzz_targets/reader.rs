//! The reader's state machine after a valid handshake: channels 1..=3 open,
//! each with a consumer tagged "probe", fed an arbitrary byte stream in
//! chunks. Input layout (shared with tests/reader_fuzz.rs and the corpus):
//! byte 0 picks frame_max (even: 4096, odd: 131072), byte 1 seeds the chunk
//! sizes, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resilient_amqp::testing::ReaderProbe;

fuzz_target!(|data: &[u8]| {
    let [first, seed, stream @ ..] = data else {
        return;
    };
    let frame_max = if first & 1 == 0 { 4096 } else { 131072 };
    let mut probe = ReaderProbe::new(frame_max, 3);
    let mut state = u32::from(*seed) | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        // xorshift32: chunk sizes 1..=64, or up to ~16 KiB one time in four.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = if state & 3 == 0 {
            1 + (state >> 8) as usize % 16384
        } else {
            1 + (state >> 8) as usize % 64
        };
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        // After an Err the probe stays ended; feeding on is harmless.
        let _ = probe.feed(chunk);
        rest = tail;
    }
    let _ = (probe.deliveries(), probe.confirms(), probe.output_len());
});
