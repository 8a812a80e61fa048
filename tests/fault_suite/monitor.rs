//! The monitor: samples the library's connection and queue stats every 5 ms, and the figures
//! read from the samples.

use super::*;

// ---------------------------------------------------------------------------------------------
// Monitor: samples the library's connection (and queue) stats every 5 ms
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) t: Instant,
    pub(crate) state: u32,
    pub(crate) connects: u64,
    pub(crate) buffered: u64,
    pub(crate) published: u64,
    pub(crate) confirmed: u64,
}

pub(crate) struct Monitor {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) samples: Arc<Mutex<Vec<Sample>>>,
    pub(crate) h: Option<JoinHandle<()>>,
}

impl Monitor {
    pub(crate) fn start(conn: u64, q: u64) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (stop.clone(), samples.clone());
        let h = std::thread::Builder::new()
            .name("fs-monitor".into())
            .spawn(move || {
                while !s2.load(Ordering::SeqCst) {
                    let mut cs: amqp_connection_stats = unsafe { std::mem::zeroed() };
                    cs.size = std::mem::size_of::<amqp_connection_stats>();
                    let mut qs: amqp_queue_stats = unsafe { std::mem::zeroed() };
                    qs.size = std::mem::size_of::<amqp_queue_stats>();
                    if unsafe { amqp_connection_get_stats(conn, &mut cs) } != amqp_result::AMQP_OK
                        || unsafe { amqp_queue_get_stats(q, &mut qs) } != amqp_result::AMQP_OK
                    {
                        break;
                    }
                    v2.lock().unwrap().push(Sample {
                        t: Instant::now(),
                        state: cs.state as u32,
                        connects: cs.connects,
                        buffered: qs.buffered,
                        published: qs.published,
                        confirmed: qs.confirmed,
                    });
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .unwrap();
        Monitor {
            stop,
            samples,
            h: Some(h),
        }
    }

    pub(crate) fn stop(&mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last sample at or before `t` (or the first one).
pub(crate) fn at(s: &[Sample], t: Instant) -> Sample {
    s.iter()
        .rev()
        .find(|x| x.t <= t)
        .or(s.first())
        .copied()
        .unwrap()
}

/// When the connection that was up at `from` was first seen lost at or after `from` (state not
/// CONNECTED, or a new connect already counted).
pub(crate) fn lost_after(s: &[Sample], from: Instant) -> Option<Instant> {
    let c0 = at(s, from).connects;
    s.iter()
        .find(|x| x.t >= from && (x.state != CONNECTED || x.connects > c0))
        .map(|x| x.t)
}

/// The first sample at or after `from` where the library is connected on a connection newer than
/// the one it had at `from`.
pub(crate) fn reconnected_after(s: &[Sample], from: Instant) -> Option<Instant> {
    let c0 = at(s, from).connects;
    s.iter()
        .find(|x| x.t >= from && x.state == CONNECTED && x.connects > c0)
        .map(|x| x.t)
}

/// The first sample at or after `from` where every message published up to `from` is confirmed.
pub(crate) fn drained_after(s: &[Sample], from: Instant) -> Option<Instant> {
    let p = at(s, from).published;
    s.iter()
        .find(|x| x.t >= from && x.confirmed >= p)
        .map(|x| x.t)
}

/// The library's outages in the samples: from the first sample that saw a connection gone (state
/// not CONNECTED, or a newer connection already counted) to the first CONNECTED one after it.
pub(crate) fn outages(s: &[Sample]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut down_since: Option<Instant> = None;
    let mut prev: Option<Sample> = None;
    for x in s {
        let lost = x.state != CONNECTED || prev.is_some_and(|p| x.connects > p.connects);
        if down_since.is_none() && lost {
            // a loss and reconnect between two samples counts from the previous sample
            down_since = Some(if x.state == CONNECTED {
                prev.map_or(x.t, |p| p.t)
            } else {
                x.t
            });
        }
        if let Some(d) = down_since {
            if x.state == CONNECTED {
                out.push(secs(x.t - d));
                down_since = None;
            }
        }
        prev = Some(*x);
    }
    out
}

pub(crate) fn outage_note(s: &[Sample]) -> String {
    let mut o = outages(s);
    if o.is_empty() {
        return "never offline".into();
    }
    o.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let max = o[o.len() - 1];
    if o.len() == 1 {
        format!("offline {max:.2} s")
    } else {
        format!(
            "offline {} times, median {:.2} s, max {max:.2} s",
            o.len(),
            o[o.len() / 2]
        )
    }
}

/// The longest time the library was CONNECTED with messages buffered while no confirm arrived
/// (seconds) and when it began; a window that is not moving although the link is up.
pub(crate) fn longest_stall(s: &[Sample]) -> (f64, Option<Instant>) {
    let mut best = (0.0, None);
    let mut since: Option<(Instant, u64)> = None;
    for x in s {
        let stuck = x.state == CONNECTED && x.buffered > 0;
        match since {
            Some((t, c)) if stuck && x.confirmed == c => {
                let d = secs(x.t - t);
                if d > best.0 {
                    best = (d, Some(t));
                }
            }
            _ => since = stuck.then_some((x.t, x.confirmed)),
        }
    }
    best
}

/// FAULT_SUITE_TRACE=1: the timeline on stderr, one line per 100 ms.
pub(crate) fn trace(label: &str, s: &[Sample], fault: Fault) {
    if std::env::var("FAULT_SUITE_TRACE").map_or(true, |v| v != "1") {
        return;
    }
    let Some(first) = s.first() else { return };
    eprintln!("trace {label}: t rel. fault start (s), state, connects, buffered, published, confirmed; fault end at {:.2}", delta(fault.first, fault.end));
    let mut next = first.t;
    for x in s {
        if x.t >= next {
            eprintln!(
                "  {:>7.2} {} {:>3} {:>7} {:>7} {:>7}",
                delta(fault.first, x.t),
                x.state,
                x.connects,
                x.buffered,
                x.published,
                x.confirmed
            );
            next = x.t + Duration::from_millis(100);
        }
    }
}

/// Connection losses seen in the samples (connects at the end - at the start).
pub(crate) fn losses(s: &[Sample]) -> u64 {
    match (s.first(), s.last()) {
        (Some(a), Some(b)) => b.connects - a.connects,
        _ => 0,
    }
}
