//! The paced publisher.

use super::*;

// ---------------------------------------------------------------------------------------------
// Paced publisher
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub(crate) struct PubResult {
    /// sequence numbers 0..attempted were passed to amqp_publish
    pub(crate) attempted: u64,
    /// those that did not get AMQP_OK
    pub(crate) refused: HashSet<u64>,
    pub(crate) buffer_full: u64,
    /// other results: (code name, count)
    pub(crate) errors: Vec<(String, u64)>,
}

impl PubResult {
    pub(crate) fn app_errors(&self) -> u64 {
        self.errors.iter().map(|e| e.1).sum()
    }
}

pub(crate) struct Publisher {
    pub(crate) stop: Arc<AtomicBool>,
    /// while set, nothing is published (and the pace restarts when cleared)
    pub(crate) paused: Arc<AtomicBool>,
    pub(crate) h: Option<JoinHandle<PubResult>>,
}

impl Publisher {
    /// Publishes seq 0, 1, ... at `rate` per second until stopped (at most `cap`).
    pub(crate) fn start(q: u64, rate: u64, cap: u64) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let (s2, pa2) = (stop.clone(), paused.clone());
        let h = std::thread::Builder::new()
            .name("fs-publisher".into())
            .spawn(move || {
                let mut r = PubResult::default();
                let mut start = Instant::now();
                let interval_ns = 1_000_000_000 / rate.max(1);
                let mut i = 0u64;
                let mut i0 = 0u64; // pace: message i is due at (i - i0) * interval after start
                while i < cap && !s2.load(Ordering::SeqCst) {
                    if pa2.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                        start = Instant::now();
                        i0 = i;
                        continue;
                    }
                    let res = publish(q, &seq_body(i));
                    match res {
                        amqp_result::AMQP_OK => {}
                        amqp_result::AMQP_ERR_BUFFER_FULL => {
                            r.buffer_full += 1;
                            r.refused.insert(i);
                        }
                        other => {
                            r.refused.insert(i);
                            let name = result_str(other);
                            match r.errors.iter_mut().find(|e| e.0 == name) {
                                Some(e) => e.1 += 1,
                                None => r.errors.push((name, 1)),
                            }
                        }
                    }
                    i += 1;
                    let due = Duration::from_nanos((i - i0) * interval_ns);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                r.attempted = i;
                r
            })
            .unwrap();
        Publisher {
            stop,
            paused,
            h: Some(h),
        }
    }

    pub(crate) fn finish(&mut self) -> PubResult {
        self.stop.store(true, Ordering::SeqCst);
        self.h
            .take()
            .map(|h| h.join().expect("publisher thread"))
            .unwrap_or_default()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
