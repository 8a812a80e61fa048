//! The content assembly against a model: well-formed messages split into
//! frames at random points, and arbitrary frame sequences.

use super::*;
use proptest::prelude::*;

/// The receive limit in these tests: generated bodies go up to 3,000 bytes,
/// so some are over it (read and dropped, then reported too large).
const LIMIT: u64 = 2_000;

/// One frame, owned (an `Event` borrows).
#[derive(Clone, Debug)]
enum Frame {
    Deliver {
        consumer_tag: Vec<u8>,
        exchange: Vec<u8>,
        routing_key: Vec<u8>,
        delivery_tag: u64,
        redelivered: bool,
    },
    Return,
    Method,
    Header(u64),
    Body(Vec<u8>),
}

/// What a frame did, comparable.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Method,
    Incomplete,
    Complete {
        consumer_tag: Vec<u8>,
        exchange: Vec<u8>,
        routing_key: Vec<u8>,
        delivery_tag: u64,
        redelivered: bool,
        body: Vec<u8>,
        too_large: Option<u64>,
    },
    Returned,
    Unexpected,
}

fn feed(a: &mut Assembly, f: &Frame) -> Out {
    let deliver;
    let event = match f {
        Frame::Deliver {
            consumer_tag,
            exchange,
            routing_key,
            delivery_tag,
            redelivered,
        } => {
            deliver = Deliver {
                consumer_tag,
                delivery_tag: *delivery_tag,
                redelivered: *redelivered,
                exchange,
                routing_key,
            };
            Event::Deliver(&deliver)
        }
        Frame::Return => Event::Return,
        Frame::Method => Event::Method,
        Frame::Header(n) => Event::Header {
            body_size: *n,
            limit: LIMIT,
            properties: &[],
        },
        Frame::Body(b) => Event::Body(b),
    };
    match a.step(event) {
        Ok(Step::Method) => Out::Method,
        Ok(Step::Incomplete) => Out::Incomplete,
        Ok(Step::Returned) => Out::Returned,
        Ok(Step::Complete(d)) => Out::Complete {
            consumer_tag: d.consumer_tag().to_vec(),
            exchange: d.exchange().to_vec(),
            routing_key: d.routing_key().to_vec(),
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            body: d.body().to_vec(),
            too_large: d.too_large,
        },
        Err(_) => Out::Unexpected,
    }
}

/// The model: the spec's rule written plainly. Between messages only
/// methods; after a content method its header; then body frames that add up
/// to exactly the announced size. Anything else is an error, after which
/// the model (like the assembly) starts over.
#[derive(Default)]
struct Model {
    /// The content method pending (None: between messages), and the body
    /// still due once its header came.
    pending: Option<(Frame, Vec<u8>)>,
    due: Option<u64>,
    /// The announced size, when over the limit (the body is not kept).
    too_large: Option<u64>,
}

impl Model {
    fn feed(&mut self, f: &Frame) -> Out {
        let out = self.step(f);
        if out == Out::Unexpected {
            *self = Model::default();
        }
        out
    }

    fn step(&mut self, f: &Frame) -> Out {
        match (self.pending.is_some(), self.due, f) {
            (false, _, Frame::Method) => Out::Method,
            (false, _, Frame::Deliver { .. } | Frame::Return) => {
                self.pending = Some((f.clone(), Vec::new()));
                Out::Incomplete
            }
            (true, None, Frame::Header(n)) => {
                self.due = Some(*n);
                self.too_large = (*n > LIMIT).then_some(*n);
                self.finish_if_whole()
            }
            (true, Some(due), Frame::Body(b)) if (b.len() as u64) <= due => {
                if let (Some((_, body)), None) = (&mut self.pending, self.too_large) {
                    body.extend_from_slice(b);
                }
                self.due = Some(due - b.len() as u64);
                self.finish_if_whole()
            }
            _ => Out::Unexpected,
        }
    }

    fn finish_if_whole(&mut self) -> Out {
        if self.due != Some(0) {
            return Out::Incomplete;
        }
        self.due = None;
        let too_large = self.too_large.take();
        match self.pending.take() {
            Some((
                Frame::Deliver {
                    consumer_tag,
                    exchange,
                    routing_key,
                    delivery_tag,
                    redelivered,
                },
                body,
            )) => Out::Complete {
                consumer_tag,
                exchange,
                routing_key,
                delivery_tag,
                redelivered,
                body,
                too_large,
            },
            _ => Out::Returned,
        }
    }
}

fn short(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn deliver() -> impl Strategy<Value = Frame> {
    (
        short(255),
        short(255),
        short(255),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(consumer_tag, exchange, routing_key, delivery_tag, redelivered)| Frame::Deliver {
                consumer_tag,
                exchange,
                routing_key,
                delivery_tag,
                redelivered,
            },
        )
}

/// A well-formed message (or a method without content): its frames, the
/// body split at random points, and what its last frame must give.
fn message() -> impl Strategy<Value = (Vec<Frame>, Out)> {
    let body = prop::collection::vec(any::<u8>(), 0..3000);
    let cuts = prop::collection::vec(any::<prop::sample::Index>(), 0..6);
    let start = prop_oneof![4 => deliver(), 1 => Just(Frame::Return), 2 => Just(Frame::Method)];
    (start, body, cuts).prop_map(|(start, body, cuts)| {
        let expected = match &start {
            Frame::Method => return (vec![Frame::Method], Out::Method),
            Frame::Deliver {
                consumer_tag,
                exchange,
                routing_key,
                delivery_tag,
                redelivered,
            } => Out::Complete {
                consumer_tag: consumer_tag.clone(),
                exchange: exchange.clone(),
                routing_key: routing_key.clone(),
                delivery_tag: *delivery_tag,
                redelivered: *redelivered,
                body: if body.len() as u64 > LIMIT {
                    Vec::new()
                } else {
                    body.clone()
                },
                too_large: (body.len() as u64 > LIMIT).then_some(body.len() as u64),
            },
            _ => Out::Returned,
        };
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        at.push(0);
        at.push(body.len());
        at.sort_unstable();
        at.dedup();
        let mut frames = vec![start, Frame::Header(body.len() as u64)];
        // A body of 0 bytes has no body frame at all.
        if !body.is_empty() {
            for w in at.windows(2) {
                frames.push(Frame::Body(body[w[0]..w[1]].to_vec()));
            }
        }
        (frames, expected)
    })
}

/// Any frame, with small sizes so that sequences are sometimes well formed.
fn any_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        deliver(),
        Just(Frame::Return),
        Just(Frame::Method),
        (0u64..6).prop_map(Frame::Header),
        prop_oneof![Just(u64::MAX), Just(1 << 40)].prop_map(Frame::Header),
        short(4).prop_map(Frame::Body),
    ]
}

proptest! {
    // Failures are printed with their minimal case; no regression files in src/.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Well-formed messages give exactly what was sent: every delivery's
    /// fields and bytes, nothing for a return, and only their last frame
    /// completes them.
    #[test]
    fn well_formed_messages_come_out_as_sent(messages in prop::collection::vec(message(), 0..8)) {
        let mut a = Assembly::Idle;
        let mut model = Model::default();
        for (frames, expected) in &messages {
            for (i, f) in frames.iter().enumerate() {
                let out = feed(&mut a, f);
                prop_assert_eq!(&out, &model.feed(f));
                if i + 1 == frames.len() {
                    prop_assert_eq!(&out, expected);
                } else {
                    prop_assert_eq!(&out, &Out::Incomplete);
                }
            }
        }
        prop_assert!(matches!(a, Assembly::Idle));
    }

    /// Any sequence of frames: the assembly does what the model does, frame
    /// by frame (every out-of-order frame an error, in every state), and
    /// never panics.
    #[test]
    fn any_frames_match_the_model(frames in prop::collection::vec(any_frame(), 0..40)) {
        let mut a = Assembly::Idle;
        let mut model = Model::default();
        for f in &frames {
            prop_assert_eq!(feed(&mut a, f), model.feed(f), "frame {:?}", f);
        }
    }

    /// Well-formed messages with stray frames among them: each stray frame
    /// is an error exactly where the model says, and the messages after it
    /// still come out whole.
    #[test]
    fn stray_frames_are_errors(
        messages in prop::collection::vec(message(), 1..6),
        strays in prop::collection::vec((any::<prop::sample::Index>(), any_frame()), 1..4),
    ) {
        let mut frames: Vec<Frame> = messages.into_iter().flat_map(|(f, _)| f).collect();
        for (at, f) in strays {
            let i = at.index(frames.len() + 1);
            frames.insert(i, f);
        }
        let mut a = Assembly::Idle;
        let mut model = Model::default();
        for f in &frames {
            prop_assert_eq!(feed(&mut a, f), model.feed(f), "frame {:?}", f);
        }
    }
}

fn deliver_frame(body_size: u64) -> Vec<Frame> {
    vec![
        Frame::Deliver {
            consumer_tag: b"ctag".to_vec(),
            exchange: b"ex".to_vec(),
            routing_key: b"rk".to_vec(),
            delivery_tag: 7,
            redelivered: true,
        },
        Frame::Header(body_size),
    ]
}

#[test]
fn a_delivery_in_one_body_frame() {
    let mut a = Assembly::Idle;
    for f in deliver_frame(3) {
        assert_eq!(feed(&mut a, &f), Out::Incomplete);
    }
    assert_eq!(
        feed(&mut a, &Frame::Body(b"abc".to_vec())),
        Out::Complete {
            consumer_tag: b"ctag".to_vec(),
            exchange: b"ex".to_vec(),
            routing_key: b"rk".to_vec(),
            delivery_tag: 7,
            redelivered: true,
            body: b"abc".to_vec(),
            too_large: None,
        }
    );
    assert!(matches!(a, Assembly::Idle));
}

#[test]
fn an_empty_body_completes_at_its_header() {
    let mut a = Assembly::Idle;
    let frames = deliver_frame(0);
    assert_eq!(feed(&mut a, &frames[0]), Out::Incomplete);
    assert!(matches!(feed(&mut a, &frames[1]), Out::Complete { body, .. } if body.is_empty()));
    assert_eq!(feed(&mut a, &Frame::Return), Out::Incomplete);
    assert_eq!(feed(&mut a, &Frame::Header(0)), Out::Returned);
}

#[test]
fn a_returned_message_is_read_and_dropped() {
    let mut a = Assembly::Idle;
    assert_eq!(feed(&mut a, &Frame::Return), Out::Incomplete);
    assert_eq!(feed(&mut a, &Frame::Header(4)), Out::Incomplete);
    assert_eq!(feed(&mut a, &Frame::Body(b"ab".to_vec())), Out::Incomplete);
    assert_eq!(feed(&mut a, &Frame::Body(b"cd".to_vec())), Out::Returned);
    assert_eq!(feed(&mut a, &Frame::Method), Out::Method);
}

#[test]
fn frames_out_of_order_are_errors() {
    let cases: Vec<(Vec<Frame>, Frame)> = vec![
        (vec![], Frame::Body(b"x".to_vec())),
        (vec![], Frame::Header(1)),
        (deliver_frame(2)[..1].to_vec(), Frame::Body(b"x".to_vec())),
        (deliver_frame(2)[..1].to_vec(), Frame::Method),
        (deliver_frame(2)[..1].to_vec(), Frame::Return),
        (deliver_frame(2), Frame::Method),
        (deliver_frame(2), Frame::Header(2)),
        (deliver_frame(2), deliver_frame(2)[0].clone()),
        (deliver_frame(2), Frame::Body(b"xyz".to_vec())),
    ];
    for (before, stray) in cases {
        let mut a = Assembly::Idle;
        for f in &before {
            assert_eq!(feed(&mut a, f), Out::Incomplete);
        }
        assert_eq!(
            feed(&mut a, &stray),
            Out::Unexpected,
            "{stray:?} after {before:?}"
        );
        assert!(matches!(a, Assembly::Idle), "idle again after an error");
    }
}

#[test]
fn an_announced_body_size_allocates_nothing_by_itself() {
    // Within the limit: nothing is reserved beyond the first allocation.
    let mut a = Assembly::Idle;
    let frames = deliver_frame(LIMIT);
    feed(&mut a, &frames[0]);
    feed(&mut a, &frames[1]);
    let Assembly::Body {
        content: Content::Deliver(p),
        ..
    } = &a
    else {
        panic!("expected the body state");
    };
    assert!(p.data.capacity() < SMALL_BODY + 16, "{}", p.data.capacity());
}

#[test]
fn a_body_over_the_limit_is_read_dropped_and_reported() {
    for size in [1 << 40, 1 << 62, u64::MAX] {
        let mut a = Assembly::Idle;
        for f in deliver_frame(size) {
            assert_eq!(feed(&mut a, &f), Out::Incomplete);
        }
        for _ in 0..100 {
            assert_eq!(feed(&mut a, &Frame::Body(vec![1; 1000])), Out::Incomplete);
        }
        let Assembly::Body {
            content: Content::Deliver(p),
            remaining,
        } = &a
        else {
            panic!("expected the body state");
        };
        assert_eq!(*remaining, size - 100_000.min(size));
        assert!(
            p.data.capacity() < SMALL_BODY + 16,
            "dropped bytes are not kept"
        );
    }
    let mut a = Assembly::Idle;
    for f in deliver_frame(LIMIT + 1) {
        feed(&mut a, &f);
    }
    feed(&mut a, &Frame::Body(vec![0; LIMIT as usize]));
    match feed(&mut a, &Frame::Body(vec![0])) {
        Out::Complete {
            body,
            too_large,
            delivery_tag,
            ..
        } => {
            assert!(body.is_empty());
            assert_eq!(too_large, Some(LIMIT + 1));
            assert_eq!(delivery_tag, 7);
        }
        other => panic!("expected the delivery, reported too large: {other:?}"),
    }
}

#[test]
fn a_multi_frame_body_grows_to_its_exact_size() {
    let size = 3 * 131_064 + 5;
    let mut a = Assembly::Idle;
    let _ = a.step(Event::Deliver(&Deliver {
        consumer_tag: b"c",
        delivery_tag: 1,
        redelivered: false,
        exchange: b"",
        routing_key: b"",
    }));
    let _ = a.step(Event::Header {
        body_size: size as u64,
        limit: u64::MAX,
        properties: &[],
    });
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut last = None;
    for part in body.chunks(131_064) {
        last = Some(a.step(Event::Body(part)));
    }
    match last {
        Some(Ok(Step::Complete(d))) => {
            assert_eq!(d.body(), &body[..]);
            assert_eq!(d.data.capacity(), d.data.len(), "no spare capacity");
        }
        _ => panic!("expected a delivery"),
    }
}

#[test]
fn out_of_order_errors_say_what_and_where() {
    let mut a = Assembly::Idle;
    let e = a.step(Event::Body(b"x")).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("unexpected body frame with no content method before it")
    );
}
