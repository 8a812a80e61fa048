//! Exponential backoff with jitter for reconnect attempts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Delay before reconnect attempt `attempt` (0 = the first retry):
/// `base * 2^attempt`, capped at `max`, then "equal jitter": a random point
/// in the upper half, so many clients that lost the same broker do not come
/// back in lockstep, yet no delay is shorter than half the schedule.
pub fn delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let base_ms = base.as_millis() as u64;
    let max_ms = max.as_millis() as u64;
    let scheduled = base_ms
        .saturating_mul(1u64.checked_shl(attempt.min(40)).unwrap_or(u64::MAX))
        .min(max_ms);
    let half = scheduled / 2;
    let jitter = if half == 0 { 0 } else { random() % (half + 1) };
    Duration::from_millis(scheduled - half + jitter)
}

/// A small xorshift generator; jitter needs spread, not cryptographic quality.
fn random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        x = t ^ (std::process::id() as u64).rotate_left(32) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(5000);
        for attempt in 0..20 {
            let scheduled = (100u64 << attempt.min(16)).min(5000);
            for _ in 0..50 {
                let d = delay(base, max, attempt).as_millis() as u64;
                assert!(
                    d >= scheduled / 2 && d <= scheduled,
                    "attempt {attempt}: {d}"
                );
            }
        }
        assert!(delay(base, max, u32::MAX) <= max);
    }

    #[test]
    fn jitter_spreads() {
        let ds: std::collections::HashSet<_> = (0..100)
            .map(|_| delay(Duration::from_millis(1000), Duration::from_secs(10), 3))
            .collect();
        assert!(ds.len() > 10, "jitter produced only {} values", ds.len());
    }

    #[test]
    fn zero_delay_is_zero() {
        assert_eq!(delay(Duration::ZERO, Duration::ZERO, 5), Duration::ZERO);
    }
}
