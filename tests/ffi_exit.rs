//! Contract v2's exit safety and handler failures, proven with real Python
//! (ctypes) and Node (koffi) processes that load this build's
//! `libresilient_amqp.so` (the scripts are in tests/ffi/):
//!
//! - `py_exit.py`: the interpreter exits (no close) while consumer callbacks
//!   and the log callback run in Python; finalization ends those threads
//!   with `pthread_exit`, a forced unwind through the library. The log
//!   callback is turned off at `atexit`, as the Python binding does: a ctypes
//!   callback that starts after `Py_Finalize` crashes CPython (the ramqp-log
//!   thread, about 1 exit in 300; the library cannot know when that is);
//! - `node_exit.js`: `process.exit()` from the main thread (no close) while
//!   deliveries arrive and the consumer and log threads call into koffi;
//! - `node_pull_drain.js`: Node ends by draining its event loop while a pull
//!   consumer (no callbacks into JavaScript) still receives;
//! - `py_throws.py` / `node_throws.js`: a handler that raises / throws
//!   (the FFI then returns 0) must not ack: the message is redelivered and
//!   counted in `invalid_dispositions`.
//!
//! Each exit scenario runs `RUNS` times; every run must end by itself within
//! its limit with status 0 and print no "FATAL" (glibc's abort on a caught
//! forced unwind) or panic. Skipped, with a reason printed, only when
//! python3 / node is not installed. koffi is installed by `npm install` into
//! target/ffi-node (pinned version) on first use.
//!
//! Needs RESILIENT_AMQP_TEST_URI (`bash scripts/test.sh` sets it).

mod common;

use common::{unique_name, uri};
// The harness (tests/c_programs/harness.rs) takes these from here.
#[allow(unused_imports)]
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[allow(dead_code)]
#[path = "c_programs/harness.rs"]
mod harness;

use harness::{describe, lib_dir, run_with_timeout, RunResult, MANIFEST_DIR};

const RUNS: usize = 5;
const KOFFI: &str = "koffi@3.3.4";
const LIMIT: Duration = Duration::from_secs(60);

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn scripts_dir() -> PathBuf {
    Path::new(MANIFEST_DIR).join("tests/ffi")
}

/// koffi's directory, installed once per machine into target/ffi-node.
fn koffi_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static INSTALL: Mutex<()> = Mutex::new(());
    DIR.get_or_init(|| {
        let _g = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
        let root = Path::new(MANIFEST_DIR).join("target/ffi-node");
        let koffi = root.join("node_modules/koffi");
        if !koffi.join("package.json").is_file() {
            std::fs::create_dir_all(&root).expect("create target/ffi-node");
            std::fs::write(
                root.join("package.json"),
                "{\"name\":\"ra-ffi-tests\",\"private\":true}\n",
            )
            .expect("write package.json");
            let out = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", KOFFI])
                .current_dir(&root)
                .output()
                .expect("running npm (node is installed, npm should be too)");
            assert!(
                out.status.success(),
                "npm install {KOFFI} failed in {}:\n{}",
                root.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        koffi
    })
    .clone()
}

fn command(tool: &str, script: &str, queue: &str) -> Command {
    let mut cmd = Command::new(tool);
    cmd.arg(scripts_dir().join(script))
        .arg(queue)
        .current_dir(scripts_dir())
        .env("RA_LIB", lib_dir().join("libresilient_amqp.so"))
        .env("RESILIENT_AMQP_TEST_URI", uri())
        .env("PYTHONPATH", scripts_dir())
        .env_remove("RESILIENT_AMQP_LOG");
    if tool == "node" {
        cmd.env("RA_KOFFI", koffi_dir());
    }
    cmd
}

/// Runs the script once; the failure, described, if it did not exit 0 by
/// itself within the limit or printed a FATAL or a panic.
fn run_once(tool: &str, script: &str, queue: &str) -> Result<RunResult, String> {
    let r = run_with_timeout(command(tool, script, queue), LIMIT);
    let bad_text = ["FATAL", "panicked", "Aborted", "core dumped"]
        .into_iter()
        .find(|t| r.stderr.contains(t));
    if r.timed_out || r.code != Some(0) || bad_text.is_some() {
        return Err(describe(&format!("{tool} {script}"), &r));
    }
    Ok(r)
}

/// `RUNS` runs of an exit scenario; all must pass.
fn exit_runs(tool: &str, script: &str) {
    if !have(tool) {
        eprintln!("SKIPPED: {tool} is not installed, {script} cannot run");
        return;
    }
    let mut failures = Vec::new();
    let mut took = Vec::new();
    for i in 0..RUNS {
        let queue = unique_name(&format!("ffi-exit-{script}-{i}"));
        match run_once(tool, script, &queue) {
            Ok(r) => took.push(format!("{:.1}", r.elapsed.as_secs_f64())),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {RUNS} runs of {script} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{script}: {RUNS} of {RUNS} exited cleanly (seconds: {took:?})");
}

fn throws_run(tool: &str, script: &str) {
    if !have(tool) {
        eprintln!("SKIPPED: {tool} is not installed, {script} cannot run");
        return;
    }
    let queue = unique_name(&format!("ffi-throws-{script}"));
    if let Err(e) = run_once(tool, script, &queue) {
        panic!("{e}");
    }
}

#[test]
fn python_exits_while_callbacks_run_without_abort() {
    exit_runs("python3", "py_exit.py");
}

#[test]
fn node_process_exit_while_deliveries_arrive_without_abort() {
    exit_runs("node", "node_exit.js");
}

/// Node's own way to end: its event loop drains (no process.exit(), no close)
/// while a pull consumer still receives. Event loops consume through pull
/// mode, so no library thread calls into JavaScript and nothing can abort.
#[test]
fn node_event_loop_drains_while_a_pull_consumer_runs_without_abort() {
    exit_runs("node", "node_pull_drain.js");
}

#[test]
fn a_python_handler_that_raises_does_not_ack() {
    throws_run("python3", "py_throws.py");
}

#[test]
fn a_node_handler_that_throws_does_not_ack() {
    throws_run("node", "node_throws.js");
}
