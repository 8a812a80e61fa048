//! Scenario building blocks: the fault's times, the publishing side and the consuming side.

use super::*;

// ---------------------------------------------------------------------------------------------
// Scenario building blocks
// ---------------------------------------------------------------------------------------------

/// When a fault happened: `first` = the first injection began, `last` = the last one began,
/// `end` = the broker (or network) was fully back.
#[derive(Clone, Copy)]
pub(crate) struct Fault {
    pub(crate) first: Instant,
    pub(crate) last: Instant,
    pub(crate) end: Instant,
    /// the fault is an instant (a close): recovery counts from when the library saw it
    pub(crate) instant: bool,
}

/// (the instant recovery counts from, fault end -> connected again in s, kept its connection)
pub(crate) fn recovery(samples: &[Sample], fault: Fault) -> (Instant, Option<f64>, bool) {
    match lost_after(samples, fault.last) {
        None => (fault.end, Some(0.0), true),
        Some(lost) => {
            let end = if fault.instant { lost } else { fault.end };
            let back = reconnected_after(samples, lost).map(|t| delta(end, t).max(0.0));
            (end, back, false)
        }
    }
}

/// How a scenario's publishing queue is declared and published to. The library's publish window
/// depends on it, and so does the duplicate bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PubQueue {
    pub(crate) durable: bool,
    pub(crate) persistent: bool,
    pub(crate) quorum: bool,
    /// the queue option publish_retries (None: the library's default)
    pub(crate) publish_retries: Option<u16>,
}

/// A durable classic queue with persistent messages (the library's defaults): zero loss must
/// hold across a broker crash.
pub(crate) const DURABLE_PERSISTENT: PubQueue = PubQueue {
    durable: true,
    persistent: true,
    quorum: false,
    publish_retries: None,
};

impl PubQueue {
    /// The amqp_queue_open options.
    pub(crate) fn options(&self) -> String {
        let retries = self
            .publish_retries
            .map_or(String::new(), |n| format!("&publish_retries={n}"));
        format!(
            "durable={}&persistent={}&queue_type={}{retries}",
            self.durable,
            self.persistent,
            if self.quorum { "quorum" } else { "classic" }
        )
    }

    /// The library's publish window for this queue (messages sent ahead of their confirms): on a
    /// lost connection at most this many were sent but not confirmed, so at most this many are
    /// resent (and may reach the queue twice).
    pub(crate) fn window(&self) -> u64 {
        resilient_amqp::testing::publish_window(self.durable, self.persistent, self.quorum)
    }
}

pub(crate) fn lib_connect(uri: &str) -> Result<u64, String> {
    let (r, c) = try_connect(uri, Some(CONN_OPTS));
    if r != amqp_result::AMQP_OK {
        return Err(format!("amqp_connect: {}: {}", result_str(r), last_error()));
    }
    let r = unsafe { amqp_wait_connected(c, 30_000) };
    if r != amqp_result::AMQP_OK {
        let _ = close(c, 100);
        return Err(format!(
            "amqp_wait_connected: {}: {}",
            result_str(r),
            last_error()
        ));
    }
    Ok(c)
}

/// The publishing side of a scenario.
pub(crate) struct PubSide {
    pub(crate) conn: u64,
    pub(crate) q: u64,
    pub(crate) name: String,
    /// the library's publish window for the queue
    pub(crate) window: u64,
    pub(crate) mon: Monitor,
    pub(crate) publisher: Publisher,
}

pub(crate) fn pub_start(
    cfg: &Cfg,
    conn_uri: &str,
    tag: &str,
    queue: PubQueue,
    conns: &mut ConnGuards,
) -> PubSide {
    let conn = conns.push(lib_connect(conn_uri).unwrap_or_else(|e| panic!("{e}")));
    let name = unique_name(&format!("fs-{tag}-pub"));
    let q = queue_open(conn, &name, None, None, Some(&queue.options()));
    let mon = Monitor::start(conn, q);
    let publisher = Publisher::start(q, cfg.rate, cfg.rate * 600);
    PubSide {
        conn,
        q,
        name,
        window: queue.window(),
        mon,
        publisher,
    }
}

/// Stops publishing, waits for recovery and the drain, counts what reached the broker.
pub(crate) fn pub_finish(cfg: &Cfg, mut side: PubSide, fault: Fault, row: &mut Row) {
    let res = side.publisher.finish();
    row.app_errors = res.app_errors();
    row.buffer_full = res.buffer_full;
    row.check(res.errors.is_empty(), || {
        format!("amqp_publish returned errors: {:?}", res.errors)
    });
    row.check(res.buffer_full == 0, || {
        format!("{} publishes refused with BUFFER_FULL", res.buffer_full)
    });
    let accepted = res.attempted - res.refused.len() as u64;
    row.n = accepted;

    // the library reconnects and drains everything
    let reconnected = poll(Duration::from_secs(60), Duration::from_millis(20), || {
        conn_state(side.conn) == amqp_connection_state::AMQP_STATE_CONNECTED
    });
    row.check(reconnected, || {
        format!(
            "not connected 60 s after the fault: state {}",
            conn_state(side.conn) as u32
        )
    });
    let mut last = qstats(side.q);
    let drained = poll(Duration::from_secs(90), Duration::from_millis(20), || {
        last = qstats(side.q);
        last.buffered == 0
    });
    row.check(drained, || {
        format!(
            "buffer not drained 90 s after the fault: {}",
            fmt_qstats(&last)
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    let samples = side.mon.stop();
    let st = qstats(side.q);
    let cs = cstats(side.conn);
    row.reconnects = cs.connects.saturating_sub(1);
    row.check(st.published == accepted, || {
        format!(
            "library counted {} published, {accepted} accepted",
            st.published
        )
    });
    row.check(st.confirmed == accepted, || {
        format!(
            "library counted {} confirmed of {accepted}: {}",
            st.confirmed,
            fmt_qstats(&st)
        )
    });

    // figures from the timeline
    let (end, back, kept) = recovery(&samples, fault);
    row.recover_connected = back;
    if kept {
        row.notes.push("kept its connection".into());
    }
    row.recover_done = drained_after(&samples, end).map(|t| delta(end, t).max(0.0));
    let max_buf = samples
        .iter()
        .filter(|x| x.t >= fault.first)
        .map(|x| x.buffered)
        .max()
        .unwrap_or(0);
    let (stall, stall_at) = longest_stall(&samples);
    row.notes.push(format!(
        "{} reconnects ({}), max buffered {max_buf}, resent {}, longest wait for a confirm while connected {stall:.2} s{}",
        row.reconnects,
        outage_note(&samples),
        st.resent,
        stall_at.map_or(String::new(), |t| format!(
            " (at {:+.2} s from the fault start)",
            delta(fault.first, t)
        ))
    ));
    trace(&row.scenario, &samples, fault);

    // close: everything must be confirmed already
    let (r, unsent) = close(side.conn, 10_000);
    // (its guard in the scenario's ConnGuards sees it closed and does nothing)
    row.check(r == amqp_result::AMQP_OK && unsent == 0, || {
        format!("amqp_close_graceful: {} unsent {unsent}", result_str(r))
    });

    // what the broker has, by an independent reader
    match drain_and_delete(&cfg.uri, &side.name) {
        Err(e) => row.fail(e),
        Ok(bodies) => {
            let mut seen = HashSet::new();
            let mut dups = 0u64;
            let mut foreign = 0u64;
            let transient = bodies.iter().filter(|b| b.1 != Some(2)).count();
            row.check(transient == 0, || {
                format!("{transient} messages without delivery mode 2 (persistent)")
            });
            for (b, _) in &bodies {
                match parse_seq(b) {
                    Some(s) if s < res.attempted && !res.refused.contains(&s) => {
                        if !seen.insert(s) {
                            dups += 1;
                        }
                    }
                    _ => foreign += 1,
                }
            }
            let missing: Vec<u64> = (0..res.attempted)
                .filter(|s| !res.refused.contains(s) && !seen.contains(s))
                .collect();
            row.missing = missing.len() as u64;
            row.duplicates = dups;
            row.check(missing.is_empty(), || {
                format!(
                    "{} messages lost: {}",
                    missing.len(),
                    seq_ranges(&missing, 8)
                )
            });
            row.check(foreign == 0, || format!("{foreign} unexpected bodies"));
            row.check(dups <= st.resent, || {
                format!("{dups} duplicates but only {} resent", st.resent)
            });
            let bound = side.window * losses(&samples).max(1);
            row.check(dups <= bound, || {
                format!(
                    "{dups} duplicates > publish window {} x losses = {bound} ({} losses)",
                    side.window,
                    losses(&samples)
                )
            });
        }
    }
}

/// `a..=b` ranges of the sorted sequence numbers `s`, at most `max` of them.
fn seq_ranges(s: &[u64], max: usize) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < s.len() && out.len() < max {
        let mut j = i;
        while j + 1 < s.len() && s[j + 1] == s[j] + 1 {
            j += 1;
        }
        out.push(format!("{}..={}", s[i], s[j]));
        i = j + 1;
    }
    if i < s.len() {
        out.push("...".into());
    }
    out.join(", ")
}

/// Distinct bodies handled by the callbacks, and when the last missing one was.
pub(crate) type DoneSet = Arc<Mutex<(HashSet<Vec<u8>>, Option<Instant>)>>;

/// The consuming side of a scenario: a pre-seeded durable queue consumed by the library.
pub(crate) struct ConSide {
    pub(crate) conn: u64,
    pub(crate) q: u64,
    pub(crate) name: String,
    pub(crate) n: u64,
    pub(crate) rec: Arc<Recorder>,
    /// distinct bodies seen by the callbacks, and when the n-th one was handled
    pub(crate) done: DoneSet,
    pub(crate) mon: Monitor,
    pub(crate) bad_log_before: usize,
}

pub(crate) fn con_prepare(cfg: &Cfg, tag: &str, conns: &mut ConnGuards) -> ConSide {
    let conn =
        conns.push(lib_connect(&cfg.uri_with("heartbeat=2")).unwrap_or_else(|e| panic!("{e}")));
    let name = unique_name(&format!("fs-{tag}-con"));
    let n = cfg.consume_n;
    let bodies: Vec<Vec<u8>> = (0..n).map(seq_body).collect();
    // seeded by plain lapin, persistent, confirmed; with FAULT_SUITE_DEDUPE=N each with its
    // body as message_id, consumed with dedupe=N
    let q = match dedupe_window() {
        Some(w) => {
            let q = queue_open(conn, &name, None, None, Some(&format!("dedupe={w}")));
            Reader::new().publish_with_ids(&name, &bodies);
            q
        }
        None => {
            let q = open_simple(conn, &name);
            Reader::new().publish(&name, &bodies);
            q
        }
    };
    con_side(cfg, conn, q, name, n)
}

/// The consuming side of queue `q` (named `name`, seeded with `n` messages) on `conn`: its
/// monitor and its recorder, which acks every delivery and notes when all `n` bodies were seen.
pub(crate) fn con_side(cfg: &Cfg, conn: u64, q: u64, name: String, n: u64) -> ConSide {
    let bad_log_before = bad_log_lines(cfg).map(|v| v.len()).unwrap_or(0);
    let mon = Monitor::start(conn, q);
    let done: DoneSet = Default::default();
    let d2 = done.clone();
    let rec = Recorder::new(
        cfg.consume_sleep,
        Box::new(move |d, _| {
            let mut g = d2.lock().unwrap();
            if g.0.insert(d.body.clone()) && g.0.len() as u64 == n {
                g.1 = Some(Instant::now());
            }
            raw(amqp_disposition::AMQP_ACK)
        }),
    );
    ConSide {
        conn,
        q,
        name,
        n,
        rec,
        done,
        mon,
        bad_log_before,
    }
}

/// FAULT_SUITE_DEDUPE=N: the consume scenarios run with the queue option dedupe=N.
pub(crate) fn dedupe_window() -> Option<u64> {
    std::env::var("FAULT_SUITE_DEDUPE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&w| w > 0)
}

pub(crate) fn con_begin(cfg: &Cfg, side: &ConSide) {
    consume(side.q, &side.rec, cfg.consume_repeat);
}

pub(crate) fn distinct_handled(rec: &Recorder, n: u64) -> u64 {
    let (missing, _, _) = check_seqs(rec.bodies().iter().map(|b| b.as_slice()), n);
    n - missing.len() as u64
}

pub(crate) fn con_finish(cfg: &Cfg, mut side: ConSide, fault: Fault, row: &mut Row) {
    let n = side.n;
    row.n = n;
    let all = poll(Duration::from_secs(120), Duration::from_millis(50), || {
        side.done.lock().unwrap().1.is_some()
    });
    let done_at = side.done.lock().unwrap().1;
    let handled = distinct_handled(&side.rec, n);
    row.missing = n - handled;
    row.check(all, || {
        format!("only {handled} of {n} messages reached a callback within 120 s")
    });
    let (_, dups, foreign) = check_seqs(side.rec.bodies().iter().map(|b| b.as_slice()), n);
    row.duplicates = dups as u64;
    if let Some(w) = dedupe_window() {
        let s = qstats(side.q);
        row.notes.push(format!(
            "dedupe={w}: {} deduplicated, {dups} duplicates reached the handler",
            s.deduplicated
        ));
    }
    row.check(foreign == 0, || format!("{foreign} unexpected bodies"));

    // the queue ends empty (nothing ready, nothing unacked)
    let mut last = None;
    let empty = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        last = queue_counts(&side.name);
        matches!(last, Some(c) if c.messages == 0)
    });
    row.check(empty, || {
        format!("queue not empty after consuming: {last:?}")
    });

    // exactly `repeat` consumers, and they stay so (not doubled by a reconnect)
    let want = cfg.consume_repeat as u64;
    let mut last = None;
    let ok = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        last = queue_counts(&side.name);
        matches!(last, Some(c) if c.consumers == want)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let again = queue_counts(&side.name);
    row.check(
        ok && matches!(again, Some(c) if c.consumers == want),
        || format!("expected {want} consumers after recovery, broker says {last:?} then {again:?}"),
    );
    row.check(
        side.rec.max_current() <= cfg.consume_repeat as usize,
        || {
            format!(
                "{} callbacks ran at once with repeat {}",
                side.rec.max_current(),
                cfg.consume_repeat
            )
        },
    );
    row.check(!side.rec.panicked.load(Ordering::SeqCst), || {
        "a callback panicked".into()
    });

    // no ack on a wrong channel
    match bad_log_lines(cfg) {
        Err(e) => row.fail(e),
        Ok(lines) => {
            let new = &lines[side.bad_log_before.min(lines.len())..];
            row.check(new.is_empty(), || {
                format!(
                    "broker log: {} bad-ack lines, e.g. {:?}",
                    new.len(),
                    &new[..new.len().min(3)]
                )
            });
        }
    }

    let samples = side.mon.stop();
    let st = qstats(side.q);
    let cs = cstats(side.conn);
    row.reconnects = cs.connects.saturating_sub(1);
    let (end, back, _) = recovery(&samples, fault);
    row.recover_connected = back;
    row.recover_done = done_at.map(|t| delta(end, t).max(0.0));
    row.notes.push(format!(
        "{} reconnects ({}), {} deliveries ({} redelivered), acked {}, released {}, repeat {}",
        row.reconnects,
        outage_note(&samples),
        side.rec.started(),
        side.rec
            .deliveries()
            .iter()
            .filter(|d| d.redelivered)
            .count(),
        st.acked,
        st.released,
        cfg.consume_repeat
    ));
    let (r, _) = close(side.conn, 10_000);
    // (its guard in the scenario's ConnGuards sees it closed and does nothing)
    row.check(r == amqp_result::AMQP_OK, || {
        format!("amqp_close_graceful: {}", result_str(r))
    });
    let _ = drain_and_delete(&cfg.uri, &side.name);
}
