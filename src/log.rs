//! Logging: silent unless the application asks. Two destinations:
//! - `RESILIENT_AMQP_LOG=debug|info|warn|error` writes to stderr (never stdout);
//! - a callback set by the application, always called on the dedicated
//!   "ramqp-log" thread, one record at a time and in order, so a
//!   slow or re-entrant callback never stalls the network or a caller.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn from_u8(v: u8) -> Level {
        match v {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Off,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Called on the "ramqp-log" thread, which has no catch frame
/// (`os_thread`): it must catch its own Rust panics.
pub(crate) type LogCallback = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// 255 = not read from the environment yet.
static STDERR_LEVEL: AtomicU8 = AtomicU8::new(255);
static SINK_LEVEL: AtomicU8 = AtomicU8::new(0);
/// Feeds the log thread, which owns the application's callback.
/// The current callback's queue, and the flag that retires its thread.
type Sink = (Sender<(Level, String)>, Arc<AtomicBool>);
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

fn stderr_level() -> u8 {
    let l = STDERR_LEVEL.load(Ordering::Relaxed);
    if l != 255 {
        return l;
    }
    let l = match std::env::var("RESILIENT_AMQP_LOG").as_deref() {
        Ok("debug") => Level::Debug,
        Ok("info") => Level::Info,
        Ok("warn") => Level::Warn,
        Ok("error") => Level::Error,
        _ => Level::Off,
    } as u8;
    STDERR_LEVEL.store(l, Ordering::Relaxed);
    l
}

pub(crate) fn enabled(level: Level) -> bool {
    let l = level as u8;
    l <= SINK_LEVEL.load(Ordering::Relaxed) || l <= stderr_level()
}

pub(crate) fn emit(level: Level, message: String) {
    let l = level as u8;
    if l <= stderr_level() {
        eprintln!("resilient-amqp {}: {}", level.name(), message);
    }
    if l <= SINK_LEVEL.load(Ordering::Relaxed) {
        if let Some((tx, _)) = SINK.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send((level, message));
        }
    }
}

/// A forked child has no log thread: stop feeding it (the child may set a
/// callback again).
extern "C" fn silence_in_forked_child() {
    SINK_LEVEL.store(0, Ordering::Relaxed);
}

/// Runs once the log thread of a replaced or removed callback has passed
/// it its last message (`amqp_set_log_callback_ex`'s release).
pub(crate) type LogRelease = Box<dyn FnOnce() + Send>;

/// Installs (or with `None` removes) the application's callback; `release`
/// runs on its log thread after its last call, once it is replaced or
/// removed (never if it could not be installed).
pub(crate) fn set_callback(
    callback: Option<LogCallback>,
    level: Level,
    release: Option<LogRelease>,
) -> std::io::Result<()> {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    // SAFETY: the handler only stores to an atomic.
    ATFORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(silence_in_forked_child));
    });
    let mut guard = SINK.lock().unwrap_or_else(|p| p.into_inner());
    // The old callback is called no more once this returns (but for a call
    // in progress): lines still queued for it are dropped. An application
    // that turns logging off before its runtime ends (Node at exit) must
    // not be called after that.
    if let Some((_, retired)) = guard.take() {
        retired.store(true, Ordering::SeqCst);
    }
    match callback {
        None => {
            SINK_LEVEL.store(0, Ordering::Relaxed);
        }
        Some(callback) => {
            let (tx, rx) = channel::<(Level, String)>();
            let retired = Arc::new(AtomicBool::new(false));
            let done = retired.clone();
            // Not a std thread: a runtime that ends it inside the callback
            // (pthread_exit at Python's exit) must not abort the process
            // (`os_thread`). Then the receiver is dropped, and records sent
            // to it are discarded (and release is not called: the process
            // is ending).
            SINK_LEVEL.store(0, Ordering::Relaxed); // until the thread runs
            crate::os_thread::spawn(c"ramqp-log", move || {
                for (level, msg) in rx {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    callback(level, &msg);
                }
                // Replaced or removed, and every message sent before was
                // passed on: the callback is done with.
                drop(callback);
                if let Some(release) = release {
                    // Not inside catch_unwind: a forced unwind must pass
                    // (`os_thread`); our wrapper of it cannot panic.
                    release();
                }
            })?;
            *guard = Some((tx, retired));
            SINK_LEVEL.store(level as u8, Ordering::Relaxed);
        }
    }
    Ok(())
}

macro_rules! log {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::emit($level, format!($($arg)*));
        }
    };
}
macro_rules! error { ($($arg:tt)*) => { log!($crate::log::Level::Error, $($arg)*) }; }
macro_rules! warn { ($($arg:tt)*) => { log!($crate::log::Level::Warn, $($arg)*) }; }
macro_rules! info { ($($arg:tt)*) => { log!($crate::log::Level::Info, $($arg)*) }; }
macro_rules! debug { ($($arg:tt)*) => { log!($crate::log::Level::Debug, $($arg)*) }; }
