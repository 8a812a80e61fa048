//! The AMQP engine survives any bytes a server sends (issue 19): a seeded,
//! dependency-free property test on stable, no broker. It feeds the reader
//! (`testing::run_reader_input`: a `ReaderProbe` with channels 1..=3, each
//! with a consumer "probe") and every codec parser
//! (`testing::run_frames_input`) with
//! - the committed fuzz corpus (recorded from RabbitMQ, fuzz/corpus/) and
//!   the crashes the fuzzers found (fuzz/regressions/), as they are;
//! - thousands of mutations of them and random frame streams (tests/reader_fuzz/gen.rs);
//! - field arrays and tables nested 1,400 deep in a connection.start.
//!
//! Each check runs in a child process (a stack overflow aborts a process)
//! on a thread with a 256 KiB stack (1 MiB in a debug build; so deep
//! recursion shows), and fails on
//! a panic, or on memory: live bytes growing by more than 64 MiB while one
//! input is handled, or any single allocation request over 64 MiB (counted
//! by this binary's global allocator; requests over 1 GiB are refused).
//!
//! Settings: RA_FUZZ_SEED (default 0x5eed19; printed on failure),
//! RA_FUZZ_ITERATIONS (default 50000, 3000 in a debug build), RA_FUZZ_ITER=N
//! (only iteration N; its input is saved). A failing input is saved under
//! target/tmp/reader-fuzz/ (the path is in the failure message).

#[path = "reader_fuzz/gen.rs"]
mod gen;

use gen::Rng;
use resilient_amqp::testing::{run_frames_input, run_reader_input};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// What one input may cost: growth of live bytes, and any one request.
const LIMIT: usize = 64 << 20;
/// The checks' stack: modest, so that deep recursion shows (an unoptimized
/// build's frames are several times larger).
const STACK: usize = if cfg!(debug_assertions) {
    1 << 20
} else {
    256 << 10
};
/// Requests over this are recorded and refused (the process then aborts).
const REFUSE: usize = 1 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static MAX_REQUEST: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn request(size: usize) -> bool {
        MAX_REQUEST.fetch_max(size, Relaxed);
        size <= REFUSE
    }
    fn grew(n: usize) {
        let now = LIVE.fetch_add(n, Relaxed) + n;
        PEAK.fetch_max(now, Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::request(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::request(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::request(new_size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            Self::grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The last panic's message, location and the frames of ours around it.
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        let ours: Vec<&str> = (trace.lines())
            .filter(|l| l.contains("resilient_amqp") || l.contains("amq_protocol"))
            .take(6)
            .map(str::trim)
            .collect();
        let text = format!("{info}\n      {}", ours.join("\n      "));
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }));
}

/// Runs one input through `run` and checks it neither panicked nor took too
/// much memory.
fn check(input: &[u8], run: fn(&[u8])) -> Result<(), String> {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    MAX_REQUEST.store(0, Relaxed);
    if std::panic::catch_unwind(|| run(input)).is_err() {
        let why = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return Err(format!("panic: {why}"));
    }
    let (grew, request) = (PEAK.load(Relaxed) - base, MAX_REQUEST.load(Relaxed));
    if request > LIMIT {
        return Err(format!("an allocation of {request} bytes (limit {LIMIT})"));
    }
    if grew > LIMIT {
        return Err(format!("live memory grew by {grew} bytes (limit {LIMIT})"));
    }
    Ok(())
}

fn reader(input: &[u8]) {
    drop(run_reader_input(input));
}

fn frames(input: &[u8]) {
    run_frames_input(input);
}

/// A reader input through the reader, and its stream through the parsers.
fn check_both(input: &[u8]) -> Result<(), String> {
    check(input, reader)?;
    let mut f = vec![input.first().copied().unwrap_or(0)];
    f.extend_from_slice(input.get(2..).unwrap_or(&[]));
    check(&f, frames)
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files of a folder under the repository, sorted (none if it is missing).
fn files(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(repo().join(dir)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.retain(|p| p.is_file() && !p.ends_with(".gitkeep"));
    paths.sort();
    (paths.into_iter())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

fn save(name: &str, input: &[u8]) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reader-fuzz");
    let path = dir.join(name);
    let _ = std::fs::create_dir_all(&dir);
    match std::fs::write(&path, input) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e})"),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Runs `body` in a child process (this test binary, only this test), on a
/// thread with a [`STACK`] stack; fails with the child's last output lines.
fn isolated(name: &str, body: fn() -> Result<(), String>) {
    if let Err(e) = in_child(name, body, None) {
        panic!("{e}");
    }
}

/// `body` in a child process; `file` is passed as RA_FUZZ_FILE. Err holds
/// the child's exit status and last output lines.
fn in_child(
    name: &str,
    body: fn() -> Result<(), String>,
    file: Option<&Path>,
) -> Result<(), String> {
    if std::env::var("RA_FUZZ_CHILD").as_deref() == Ok(name) {
        quiet_panics();
        let t = std::thread::Builder::new().stack_size(STACK);
        let result = t.spawn(body).expect("thread").join();
        let _ = std::panic::take_hook();
        return match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("{name} panicked outside an input"),
        };
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = std::process::Command::new(exe);
    child.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    child.env("RA_FUZZ_CHILD", name);
    if let Some(file) = file {
        child.env("RA_FUZZ_FILE", file);
    }
    let out = child.output().expect("run the child");
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    Err(format!(
        "{name} failed in its child process ({}):\n{tail}",
        out.status
    ))
}

/// The reader corpus, and the frames corpus in the reader's layout (not the
/// regressions: a crash there would stop every iteration after it).
fn seeds() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = (files("fuzz/corpus/reader").into_iter())
        .map(|(_, b)| b)
        .collect();
    for (_, b) in files("fuzz/corpus/frames") {
        let mut r = vec![b.first().copied().unwrap_or(0), 7];
        r.extend_from_slice(b.get(1..).unwrap_or(&[]));
        all.push(r);
    }
    all
}

fn corpus_body() -> Result<(), String> {
    let (mut deliveries, mut confirms, mut replies) = (0, 0, 0);
    for (path, input) in files("fuzz/corpus/reader") {
        check_both(&input).map_err(|e| format!("{}: {e}", path.display()))?;
        let probe = run_reader_input(&input).ok_or("a corpus file under 2 bytes")?;
        deliveries += probe.deliveries();
        confirms += probe.confirms();
        replies += probe.output_len();
    }
    for (path, input) in files("fuzz/corpus/frames") {
        check(&input, frames).map_err(|e| format!("{}: {e}", path.display()))?;
        if run_frames_input(&input) == 0 {
            return Err(format!("{}: no whole frame", path.display()));
        }
    }
    // The recorder makes deliveries reach the probe's consumers (7 bodies in
    // deliveries.bin alone), confirms, and channel.close (close-ok replies).
    if deliveries < 7 || confirms == 0 || replies == 0 {
        return Err(format!(
            "the corpus reached too little: {deliveries} deliveries, {confirms} confirms, \
             {replies} reply bytes (regenerate it: bash scripts/fuzz-corpus.sh)"
        ));
    }
    Ok(())
}

#[test]
fn corpus_replays_and_reaches_the_consumers() {
    isolated("corpus_replays_and_reaches_the_consumers", corpus_body);
}

/// The regression RA_FUZZ_FILE (under fuzz/regressions/reader or frames).
fn regression_body() -> Result<(), String> {
    let path = PathBuf::from(std::env::var_os("RA_FUZZ_FILE").ok_or("RA_FUZZ_FILE unset")?);
    let input = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let is_reader = path.parent().is_some_and(|d| d.ends_with("reader"));
    check(&input, if is_reader { reader } else { frames })
}

/// Every file of fuzz/regressions/{reader,frames}, each in its own child
/// process (one crash does not hide the others).
#[test]
fn fuzz_regressions_replay_cleanly() {
    let mut failures = Vec::new();
    for dir in ["fuzz/regressions/reader", "fuzz/regressions/frames"] {
        for (path, _) in files(dir) {
            let name = "fuzz_regressions_replay_cleanly";
            if std::env::var("RA_FUZZ_CHILD").as_deref() == Ok(name) {
                // The child runs the one file it was given.
                return drop(in_child(name, regression_body, None));
            }
            if let Err(e) = in_child(name, regression_body, Some(&path)) {
                failures.push(format!("{}:\n{e}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn deep_nesting_body() -> Result<(), String> {
    for tables in [false, true] {
        let start = gen::connection_start(&gen::nested_value(1400, tables));
        let mut input = vec![1, 0]; // frame_max 131072
        input.extend_from_slice(&start);
        let what = if tables { "tables" } else { "field arrays" };
        eprintln!(
            "{what} nested 1400 deep in connection.start ({} bytes)",
            start.len()
        );
        check_both(&input).map_err(|e| format!("{what} nested 1400 deep: {e}"))?;
    }
    Ok(())
}

#[test]
fn deep_nesting_in_connection_start() {
    isolated("deep_nesting_in_connection_start", deep_nesting_body);
}

fn mutations_body() -> Result<(), String> {
    let seed = env_u64("RA_FUZZ_SEED").unwrap_or(0x5eed19);
    let default = if cfg!(debug_assertions) { 3000 } else { 50000 };
    let iterations = env_u64("RA_FUZZ_ITERATIONS").unwrap_or(default);
    let only = env_u64("RA_FUZZ_ITER");
    let corpus = seeds();
    if corpus.is_empty() {
        return Err("no corpus under fuzz/corpus".into());
    }
    // Distinct failures (by their first line): count, first iteration, detail.
    let mut failures: Vec<(String, usize, String)> = Vec::new();
    for i in only.map_or(0..iterations, |n| n..n + 1) {
        let mut rng = Rng::new(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (input, how) = if rng.one_in(4) {
            (gen::random_stream(&mut rng), vec!["random stream"])
        } else {
            let mut input = rng.pick(&corpus).clone();
            let how = (0..1 + rng.below(4))
                .map(|_| gen::mutate(&mut rng, &mut input, &corpus))
                .collect();
            (input, how)
        };
        // A trail for a crash that kills the process.
        eprintln!("iteration {i}: {how:?}, {} bytes", input.len());
        if only.is_some() {
            eprintln!(
                "input saved: {}",
                save(&format!("seed{seed:x}-iter{i}.bin"), &input)
            );
        }
        if let Err(e) = check_both(&input) {
            let key = e.lines().next().unwrap_or("").to_string();
            match failures.iter_mut().find(|f| f.0 == key) {
                Some(f) => f.1 += 1,
                None => {
                    let path = save(&format!("seed{seed:x}-iter{i}.bin"), &input);
                    failures.push((
                        key,
                        1,
                        format!("iteration {i} {how:?}: {e}\n    input: {path}"),
                    ));
                }
            }
            if failures.len() >= 8 {
                break;
            }
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = (failures.iter())
        .map(|(_, n, detail)| format!("- {n} time(s), first {detail}"))
        .collect();
    Err(format!(
        "RA_FUZZ_SEED=0x{seed:x}: {} distinct failure(s) (replay one: RA_FUZZ_SEED=0x{seed:x} \
         RA_FUZZ_ITER=N cargo test --release --test reader_fuzz)\n{}",
        failures.len(),
        list.join("\n")
    ))
}

#[test]
fn mutated_corpus_and_random_frames() {
    isolated("mutated_corpus_and_random_frames", mutations_body);
}
