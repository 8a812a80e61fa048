//! Every codec parser on arbitrary bytes: the first byte picks frame_max
//! (even: 4096, odd: 131072), the rest is split into frames and each
//! payload goes through every method and header parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let frame_max = if first & 1 == 0 { 4096 } else { 131072 };
    resilient_amqp::testing::parse_with_every_parser(rest, frame_max);
});
