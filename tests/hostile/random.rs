//! The random mutation scenario: see `mutate.rs` for the mutations and what is asserted.

use super::*;

/// `RA_HOSTILE_ITERATIONS` mutations, then recovery and the checks.
pub fn random_mutation() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let _g = harness::serial();
    let (seed, iterations) = (mutate::seed(), mutate::iterations());
    eprintln!("random_mutation: RA_HOSTILE_SEED={seed} RA_HOSTILE_ITERATIONS={iterations}");
    let mut f = harness::Failures::default();
    let rss0 = harness::vm_rss();
    let reader = Reader::new();
    let (pq, cq) = (unique_name("mut-pub"), unique_name("mut-con"));
    let seeded = 200u64;
    reader
        .declare(
            &cq,
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .unwrap();
    reader.publish(&cq, &(0..seeded).map(seq_body).collect::<Vec<_>>());

    let done = Arc::new(AtomicU64::new(0));
    let proxy = proxy::HostileProxy::start(
        harness::upstream(),
        mutate::mutator(seed, iterations, done.clone()),
    );
    let conn = ConnGuard::connect(
        &harness::uri_via(proxy.port, "heartbeat=2"),
        Some("reconnect_delay_ms=20&reconnect_delay_max_ms=200"),
    );
    let c = conn.h();
    let q = queue_open(c, &pq, None, None, None);
    let qc = queue_open(c, &cq, None, None, Some("prefetch=20"));
    let rec = Recorder::new(
        Duration::from_millis(2),
        Box::new(|_, _| raw(amqp_disposition::AMQP_REQUEUE)),
    );
    consume(qc, &rec, 1);

    // publish (paced, 2 ms) until the mutations are done
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let publisher = std::thread::spawn(move || {
        let (mut n, mut slowest, mut bad) = (0u64, Duration::ZERO, Vec::new());
        let start = Instant::now();
        while !st.load(Ordering::SeqCst) {
            let t = Instant::now();
            let r = publish(q, &seq_body(n));
            slowest = slowest.max(t.elapsed());
            if r != amqp_result::AMQP_OK {
                bad.push((n, r));
            }
            n += 1;
            if let Some(w) = Duration::from_millis(2 * n).checked_sub(start.elapsed()) {
                std::thread::sleep(w);
            }
        }
        (n, slowest, bad)
    });
    // until the mutations are done; a connection on which nothing moves (no confirm, no
    // delivery, no new connection) for STALL is reported and cut, so the run goes on
    const STALL: Duration = Duration::from_secs(8);
    let watchdog = Duration::from_secs(30 + iterations / 2);
    let t0 = Instant::now();
    let (mut report, mut since, mut seen) = (Instant::now(), Instant::now(), (0, 0, 0));
    let mut stalls: Vec<String> = Vec::new();
    let mut excused: Vec<String> = Vec::new();
    let finished = loop {
        if done.load(Ordering::SeqCst) >= iterations {
            break true;
        }
        if t0.elapsed() > watchdog {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
        let now = (proxy.accepted(), qstats(q).confirmed, rec.started());
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() > STALL {
            let note = proxy.note();
            eprintln!("random_mutation: STALL for {STALL:?} after: {note}");
            if note.starts_with(mutate::FORGED_CONFIRM) {
                excused.push(note);
            } else {
                stalls.push(note);
            }
            proxy.cut_all();
            since = Instant::now();
        }
        if report.elapsed() >= Duration::from_secs(10) {
            report = Instant::now();
            let s = cstats(c);
            eprintln!(
                "random_mutation: {} mutations after {:?}; proxy accepted {}, library connects {} failed {}, deliveries {}",
                done.load(Ordering::SeqCst), t0.elapsed(), proxy.accepted(), s.connects, s.failed_attempts, rec.started()
            );
        }
    };
    f.check(stalls.is_empty(), || {
        format!(
            "{} times the library kept a connection on which nothing moved for {STALL:?} (heartbeat 2 s; the proxy cut it), after: {}",
            stalls.len(),
            stalls.join(" | ")
        )
    });
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (n, slowest, bad) = publisher.join().unwrap();
    f.check(finished, || {
        format!(
            "only {} of {iterations} mutations within {watchdog:?}",
            done.load(Ordering::SeqCst)
        )
    });
    // AMQP_ERR_BUFFER_FULL is the documented backpressure (bounded memory, nothing stored):
    // allowed, and reported. In a long run the connection is broken every ~0.2 s and the
    // reconnect backoff never resets, so confirms fall behind the paced publisher.
    let full = bad
        .iter()
        .filter(|(_, r)| *r == amqp_result::AMQP_ERR_BUFFER_FULL)
        .count();
    if full > 0 {
        eprintln!("random_mutation: {full} of {n} publishes refused with AMQP_ERR_BUFFER_FULL (backpressure)");
    }
    let failed: Vec<_> = bad
        .iter()
        .filter(|(_, r)| *r != amqp_result::AMQP_ERR_BUFFER_FULL)
        .collect();
    f.check(failed.is_empty(), || {
        format!(
            "{} publishes failed, e.g. {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        )
    });
    f.check(slowest <= harness::PUBLISH_BOUND, || {
        format!("slowest amqp_publish took {slowest:?}")
    });

    // recovery through the now transparent proxy
    let mut last = qstats(q);
    let drained = poll(harness::RECOVER, Duration::from_millis(20), || {
        last = qstats(q);
        last.buffered == 0
    });
    f.check(drained, || {
        format!(
            "not everything confirmed after the mutations: {}",
            fmt_qstats(&last)
        )
    });
    let before = rec.started();
    let consuming = poll(harness::RECOVER, Duration::from_millis(20), || {
        rec.started() > before + 20
    });
    f.check(consuming, || {
        let s = qstats(qc);
        let cs = cstats(c);
        let broker = ctl_try("list_queues name messages_ready messages_unacknowledged consumers").1;
        let broker: Vec<&str> = broker.lines().filter(|l| l.contains(&cq)).collect();
        let channels =
            ctl_try("list_channels number consumer_count messages_unacknowledged prefetch_count").1;
        format!(
            "the consumer did not come back after the mutations: {} deliveries to the callback; \
             consumer queue: {}, consume_refusals {}; consume link: connects {} failed {}; \
             broker: {broker:?}; channels: {:?}",
            rec.started(),
            fmt_qstats(&s),
            s.consume_refusals,
            cs.consume_connects,
            cs.consume_failed_attempts,
            channels.lines().skip(1).collect::<Vec<_>>()
        )
    });
    let cs = cstats(c);
    let t = Instant::now();
    let (r, unsent) = conn.close(harness::CLOSE_TIMEOUT_MS);
    let el = t.elapsed();
    f.check(
        el <= Duration::from_millis(harness::CLOSE_TIMEOUT_MS.into()) + harness::CLOSE_SLACK,
        || {
            format!(
                "amqp_close_graceful({}) took {el:?} ({}, unsent {unsent})",
                harness::CLOSE_TIMEOUT_MS,
                result_str(r)
            )
        },
    );

    let published: Vec<Vec<u8>> = reader.drain(&pq).into_iter().map(|g| g.body).collect();
    let present: HashSet<u64> = published.iter().filter_map(|b| parse_seq(b)).collect();
    let confirmed = proxy.confirmed();
    let lost: Vec<u64> = confirmed
        .iter()
        .filter(|s| !present.contains(s))
        .copied()
        .collect();
    f.check(lost.is_empty(), || {
        format!(
            "{} messages the broker confirmed are lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        )
    });
    let absent = (0..n).filter(|s| !present.contains(s)).count();
    let kept: Vec<Vec<u8>> = reader.drain(&cq).into_iter().map(|g| g.body).collect();
    let (missing, _, _) = check_seqs(kept.iter().map(|b| b.as_slice()), seeded);
    f.check(missing.is_empty(), || {
        format!(
            "{} of {seeded} seeded messages gone from the requeueing consumer's queue, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        )
    });
    reader.delete(&pq);
    reader.delete(&cq);
    let grew = harness::vm_rss().saturating_sub(rss0);
    f.check(grew < harness::RSS_BOUND, || {
        format!("VmRSS grew by {} MiB", grew >> 20)
    });
    eprintln!(
        "HOSTILE random_mutation seed {seed}: {} mutations in {took:?}, {} stalls + {} after a forged confirm (cut) over {} connections (library: {} connects, {} failed) | \
         published {n}, broker-confirmed {}, absent (not broker-confirmed) {absent} | deliveries {} | slowest publish {slowest:?} | close {el:?} | rss +{} KiB",
        done.load(Ordering::SeqCst), stalls.len(), excused.len(), proxy.accepted(), cs.connects, cs.failed_attempts, confirmed.len(), rec.started(), grew >> 10
    );
    drop(proxy);
    f.assert_none("random_mutation");
}
