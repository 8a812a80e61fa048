//! Inputs for tests/reader_fuzz.rs: a seeded xorshift PRNG, AMQP frame
//! builders, mutations of corpus inputs and random frame streams. Every
//! input has the layout of `testing::run_reader_input`: byte 0 frame_max
//! (even 4096, odd 131072), byte 1 chunk seed, then the stream.

/// xorshift64* (Vigna), seeded through splitmix64 so nearby seeds differ.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Fewer than `max` random bytes.
    pub fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
}

/// Integers that break arithmetic: tags, sizes, counts.
const HUGE: &[u64] = &[
    0,
    1,
    u64::MAX,
    u64::MAX - 1,
    1 << 63,
    1 << 32,
    (1 << 32) - 1,
    1 << 31,
    64 << 20,
    (64 << 20) + 1,
    1 << 40,
    4088,
    4089,
    131064,
];

pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn ids(class: u16, method: u16) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p
}

fn short_str(p: &mut Vec<u8>, s: &[u8]) {
    p.push(s.len().min(255) as u8);
    p.extend_from_slice(&s[..s.len().min(255)]);
}

fn long_str(p: &mut Vec<u8>, s: &[u8]) {
    p.extend_from_slice(&(s.len() as u32).to_be_bytes());
    p.extend_from_slice(s);
}

/// A field value nested `depth` deep: field arrays ('A') or tables ('F')
/// around a long string.
pub fn nested_value(depth: usize, tables: bool) -> Vec<u8> {
    let mut v = vec![b'S'];
    long_str(&mut v, b"leaf");
    for _ in 0..depth {
        let mut outer = Vec::new();
        if tables {
            outer.push(b'F');
            let mut t = Vec::new();
            short_str(&mut t, b"k");
            t.extend_from_slice(&v);
            long_str(&mut outer, &t);
        } else {
            outer.push(b'A');
            long_str(&mut outer, &v);
        }
        v = outer;
    }
    v
}

/// connection.start (10,10) on channel 0 whose server-properties table
/// holds `value` under "nested".
pub fn connection_start(value: &[u8]) -> Vec<u8> {
    let mut p = ids(10, 10);
    p.extend_from_slice(&[0, 9]);
    let mut table = Vec::new();
    short_str(&mut table, b"nested");
    table.extend_from_slice(value);
    long_str(&mut p, &table);
    long_str(&mut p, b"PLAIN AMQPLAIN");
    long_str(&mut p, b"en_US");
    frame(1, 0, &p)
}

fn deliver(rng: &mut Rng, channel: u16, body: &[u8], frame_max: usize) -> Vec<u8> {
    let mut p = ids(60, 60);
    let tag: &[u8] = if rng.one_in(5) { b"other" } else { b"probe" };
    short_str(&mut p, tag);
    p.extend_from_slice(&rng.pick(HUGE).to_be_bytes());
    p.push(rng.below(2) as u8);
    short_str(&mut p, b"ex");
    short_str(&mut p, b"rk");
    let mut out = frame(1, channel, &p);
    out.extend(content(rng, channel, body, frame_max));
    out
}

/// Content header (its body size true, or now and then a lie) and bodies.
fn content(rng: &mut Rng, channel: u16, body: &[u8], frame_max: usize) -> Vec<u8> {
    let mut h = ids(60, 0);
    let size = if rng.one_in(4) {
        *rng.pick(HUGE)
    } else {
        body.len() as u64
    };
    h.extend_from_slice(&size.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    let mut out = frame(2, channel, &h);
    for part in body.chunks(frame_max - 8) {
        out.extend(frame(3, channel, part));
    }
    out
}

/// One random frame (or a few: a message), on a channel near 1..=3.
pub fn random_frames(rng: &mut Rng, frame_max: usize) -> Vec<u8> {
    let ch = *rng.pick(&[0u16, 1, 1, 2, 3, 4, 65535]);
    let mut p;
    match rng.below(15) {
        0..=3 => {
            let len = *rng.pick(&[0usize, 1, 100, 4088, 4089, 9000, 20000]);
            let body = rng.bytes(len);
            return deliver(rng, ch, &body, frame_max);
        }
        4 | 5 => {
            p = ids(60, *rng.pick(&[80u16, 120]));
            p.extend_from_slice(&rng.pick(HUGE).to_be_bytes());
            p.push(rng.below(4) as u8);
        }
        6 => {
            p = ids(60, 50); // basic.return, then its content
            p.extend_from_slice(&312u16.to_be_bytes());
            short_str(&mut p, b"NO_ROUTE");
            short_str(&mut p, b"");
            short_str(&mut p, b"rk");
            let mut out = frame(1, ch, &p);
            let body = rng.some_bytes(5000);
            out.extend(content(rng, ch, &body, frame_max));
            return out;
        }
        7 => {
            p = ids(*rng.pick(&[20u16, 10]), *rng.pick(&[40u16, 50]));
            p.extend_from_slice(&404u16.to_be_bytes());
            short_str(&mut p, b"NOT_FOUND");
            p.extend_from_slice(&[0, 50, 0, 10]);
        }
        8 => {
            p = ids(60, 30); // basic.cancel from the broker
            short_str(&mut p, b"probe");
            p.push(0);
        }
        9 => {
            let (class, method) = *rng.pick(&[
                (20u16, 20u16),
                (20, 41),
                (10, 51),
                (10, 60),
                (10, 61),
                (60, 71),
                (60, 21),
                (85, 11),
            ]);
            p = ids(class, method);
            p.extend(rng.some_bytes(24));
        }
        10 => return frame(8, ch, &[]),
        11 => {
            let kind = rng.next() as u8;
            return frame(kind, ch, &rng.some_bytes(64));
        }
        12 => return frame(2, ch, &rng.some_bytes(40)),
        13 => {
            // A big announced size; the bytes may never come.
            let mut f = frame(1, ch, &rng.some_bytes(16));
            let size = *rng.pick(&[
                u32::MAX,
                frame_max as u32 - 8,
                frame_max as u32 - 7,
                1 << 20,
            ]);
            f[3..7].copy_from_slice(&size.to_be_bytes());
            return f;
        }
        _ => return connection_start(&nested_value(rng.below(200), rng.one_in(2))),
    }
    frame(1, ch, &p)
}

/// A stream of random frames after a fresh header (frame_max, chunk seed).
pub fn random_stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![rng.next() as u8, rng.next() as u8];
    let frame_max = if out[0] & 1 == 0 { 4096 } else { 131072 };
    for _ in 0..1 + rng.below(40) {
        out.extend(random_frames(rng, frame_max));
    }
    out
}

/// Where the whole frames of a stream start (offset, payload length).
fn frame_spans(stream: &[u8]) -> Vec<(usize, usize)> {
    let (mut at, mut spans) = (0, Vec::new());
    while stream.len() >= at + 8 {
        let size = u32::from_be_bytes(stream[at + 3..at + 7].try_into().unwrap()) as usize;
        if stream.len() < at + 8 + size {
            break;
        }
        spans.push((at, size));
        at += 8 + size;
    }
    spans
}

/// One mutation of `input` (layout bytes kept), `others` for splices.
/// Returns its name, for the failure report.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>]) -> &'static str {
    if input.len() < 2 {
        input.resize(2, 0);
    }
    let spans = frame_spans(&input[2..]);
    let frame_max = if input[0] & 1 == 0 { 4096 } else { 131072 };
    let len = input.len();
    let pos = 2 + rng.below(len - 1).min(len - 2);
    let pick_frame = |rng: &mut Rng| {
        spans
            .get(rng.below(spans.len().max(1)))
            .map(|&(at, n)| (2 + at, n))
    };
    match rng.below(14) {
        0 if len > 2 => {
            input[pos.min(len - 1)] ^= 1 << rng.below(8);
            "bit flip"
        }
        1 if len > 2 => {
            let any = rng.next() as u8;
            input[pos.min(len - 1)] = *rng.pick(&[0, 1, 0x7F, 0x80, 0xFF, 0xCE, b'A', b'F', any]);
            "byte set"
        }
        2 if !others.is_empty() => {
            let other = rng.pick(others);
            let from = rng.below(other.len() + 1);
            let n = rng.below(other.len() - from + 1);
            let piece = other[from..from + n].to_vec();
            input.splice(pos..pos, piece);
            "splice"
        }
        3 => {
            input.truncate(pos);
            "truncate"
        }
        4 => {
            let f = random_frames(rng, frame_max);
            let at = pick_frame(rng).map_or(pos, |(at, _)| at);
            input.splice(at..at, f);
            "insert random frame"
        }
        5 => {
            let f = connection_start(&nested_value(1 + rng.below(300), rng.one_in(2)));
            let at = pick_frame(rng).map_or(pos, |(at, _)| at);
            input.splice(at..at, f);
            "insert nested field values"
        }
        6 | 7 => match pick_frame(rng) {
            // A header's body size, a deliver's or ack's tag: a big number.
            Some((at, n)) if n >= 12 => {
                // A header's body size and an ack's tag follow 4 bytes; a
                // deliver's tag follows its consumer tag.
                let p = at + 7;
                let off = if input[at] == 1 && input[p..p + 4] == [0, 60, 0, 60] {
                    p + 5 + input[p + 4] as usize
                } else {
                    p + 4
                };
                if off + 8 <= p + n {
                    input[off..off + 8].copy_from_slice(&rng.pick(HUGE).to_be_bytes());
                }
                "huge number"
            }
            _ => "nothing",
        },
        8 => match pick_frame(rng) {
            Some((at, n)) => {
                let f = input[at..at + 8 + n].to_vec();
                let to = pick_frame(rng).map_or(at, |(to, _)| to);
                input.splice(to..to, f);
                "duplicate frame"
            }
            None => "nothing",
        },
        9 => match pick_frame(rng) {
            Some((at, n)) => {
                input.drain(at..at + 8 + n);
                "drop frame"
            }
            None => "nothing",
        },
        10 => match pick_frame(rng) {
            Some((at, _)) => {
                let ch = *rng.pick(&[0u16, 1, 2, 3, 4]);
                input[at + 1..at + 3].copy_from_slice(&ch.to_be_bytes());
                "move frame to another channel"
            }
            None => "nothing",
        },
        11 => match pick_frame(rng) {
            Some((at, _)) => {
                let size = *rng.pick(&[u32::MAX, 1 << 20, frame_max as u32, frame_max as u32 - 8]);
                input[at + 3..at + 7].copy_from_slice(&size.to_be_bytes());
                "frame size"
            }
            None => "nothing",
        },
        12 => {
            input[0] = rng.next() as u8;
            input[1] = rng.next() as u8;
            "frame_max and chunking"
        }
        _ => {
            let n = rng.below(64);
            let b = rng.bytes(n);
            input.splice(pos..pos, b);
            "insert random bytes"
        }
    }
}
