//! The hostile acts, as [`Tamper`]s, and the factories that put them on connections.

use super::frames::{self, Frame};
use super::proxy::{Act, Cx, Factory, Tamper};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first connection gets `t`; later ones are transparent.
pub fn first_conn(t: impl Tamper + 'static) -> Factory {
    let slot: Mutex<Option<Box<dyn Tamper>>> = Mutex::new(Some(Box::new(t)));
    Box::new(move |n| {
        if n == 1 {
            slot.lock().unwrap().take()
        } else {
            None
        }
    })
}

/// Acts once: `f` sees every frame of every connection until it returns an act (counted as
/// the hostile act); after that every connection is transparent. Every connection, because an
/// `amqp_connection` has two: the publish link (the first) and, once a consumer starts, the
/// consume link, which carries the deliveries.
pub struct Once<F>(Arc<Mutex<(F, bool)>>);

impl<F: FnMut(&Frame, &Cx) -> Option<Act> + Send> Tamper for Once<F> {
    fn frame(&mut self, f: &Frame, cx: &Cx) -> Act {
        let mut once = self.0.lock().unwrap();
        if once.1 {
            return Act::Forward;
        }
        match (once.0)(f, cx) {
            Some(a) => {
                once.1 = true;
                cx.acted();
                a
            }
            None => Act::Forward,
        }
    }
}

/// `f` once, on whichever connection it first acts.
pub fn once(f: impl FnMut(&Frame, &Cx) -> Option<Act> + Send + 'static) -> Factory {
    let shared = Arc::new(Mutex::new((f, false)));
    Box::new(move |_| Some(Box::new(Once(shared.clone())) as Box<dyn Tamper>))
}

/// After the broker's first publisher confirm (the library is publishing): the confirm, then
/// `inject(channel of the confirm, published so far on it)`.
pub fn after_first_confirm(inject: impl Fn(u16, u64) -> Vec<u8> + Send + 'static) -> Factory {
    once(move |f, cx| {
        f.is(frames::BASIC_ACK).then(|| {
            let mut out = f.encode();
            out.extend(inject(f.channel, cx.published_on(f.channel)));
            Act::Replace(out)
        })
    })
}

/// At the first real basic.deliver on a consuming channel: `inject(channel, consumer tag, its
/// delivery tag)` goes to the library first, then the real delivery.
pub fn before_first_delivery(
    inject: impl Fn(u16, &[u8], u64) -> Vec<u8> + Send + 'static,
) -> Factory {
    before_nth_delivery(1, inject)
}

/// The same at the n-th real delivery (1-based).
pub fn before_nth_delivery(
    n: u64,
    inject: impl Fn(u16, &[u8], u64) -> Vec<u8> + Send + 'static,
) -> Factory {
    let mut seen = 0;
    once(move |f, _| {
        if !f.is(frames::BASIC_DELIVER) {
            return None;
        }
        seen += 1;
        if seen < n {
            return None;
        }
        let (ctag, dtag) = frames::deliver_fields(f).expect("a real basic.deliver");
        let mut out = inject(f.channel, &ctag, dtag);
        out.extend(f.encode());
        Some(Act::Replace(out))
    })
}

/// A forged delivery with an absurd content header: `body_size` announced, 7 body bytes sent.
pub fn huge_body_size(body_size: u64) -> Factory {
    before_first_delivery(move |ch, ctag, _| {
        let mut v = frames::deliver(ch, ctag, 1 << 20, "hostile").encode();
        v.extend(frames::content_header(ch, body_size).encode());
        v.extend(frames::body(ch, b"hostile").encode());
        v
    })
}

/// A forged, well-formed delivery for the real consumer with delivery tag `tag(real tag)`.
pub fn forged_tag(n: u64, tag: impl Fn(u64) -> u64 + Send + 'static) -> Factory {
    before_nth_delivery(n, move |ch, ctag, real| {
        frames::delivery(ch, ctag, tag(real), b"hostile-forged-tag")
    })
}

/// Rewrites the real connection.tune.
pub fn tune(channel_max: Option<u16>, frame_max: Option<u32>, heartbeat: Option<u16>) -> Factory {
    once(move |f, _| {
        f.is(frames::CONNECTION_TUNE).then(|| {
            Act::Replace(frames::tune_rewritten(f, channel_max, frame_max, heartbeat).encode())
        })
    })
}

/// Field arrays nested this deep: about 7 KB.
pub const DEEP: usize = 1400;

/// Turns the broker's acks into nacks (requeue=false) for `span` from the first one, on the
/// first connection; counts the tags it covered in `forged_nacks`.
pub struct NackStorm {
    pub span: Duration,
    pub began: Option<Instant>,
    /// per channel, the highest tag settled so far (for what a multiple nack covers)
    pub floor: std::collections::HashMap<u16, u64>,
}

impl Tamper for NackStorm {
    fn frame(&mut self, f: &Frame, cx: &Cx) -> Act {
        if !f.is(frames::BASIC_ACK) {
            return Act::Forward;
        }
        let began = *self.began.get_or_insert_with(|| {
            cx.acted();
            Instant::now()
        });
        let (tag, multiple) = frames::ack_fields(f).unwrap();
        let floor = self.floor.entry(f.channel).or_insert(0);
        let covered = if multiple {
            tag.saturating_sub(*floor)
        } else {
            1
        };
        *floor = (*floor).max(tag);
        if began.elapsed() > self.span {
            return Act::Forward;
        }
        cx.stats.forged_nacks.fetch_add(covered, Ordering::SeqCst);
        Act::Replace(frames::nack(f.channel, tag, multiple, false).encode())
    }
}

pub fn nack_storm(span: Duration) -> Factory {
    first_conn(NackStorm {
        span,
        began: None,
        floor: Default::default(),
    })
}
