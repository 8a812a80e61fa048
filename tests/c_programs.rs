//! Compiles and runs the C programs of `tests/c/` and `examples-c/` against the
//! shared library and the generated header, one `#[test]` per program.
//!
//! - Programs are built with `gcc -std=c11 -Wall -Wextra -Werror -pthread`
//!   (`-pedantic` for the header test, `g++ -std=c++17` for the C++ one) into
//!   a fresh directory under the system temp dir, linked with
//!   `-lresilient_amqp -Wl,-rpath,<dir of the .so>`.
//! - Each runs with a time limit (its whole process group is killed after it)
//!   and must exit 0. Its stdout may only hold `PASS ...`, `FAIL ...` and
//!   `# ...` lines: anything else would be the library printing to stdout,
//!   which the contract forbids.
//! - Programs that need the broker read `RESILIENT_AMQP_TEST_URI` (and
//!   `RESILIENT_AMQP_TEST_CTL`); without it they fail with a message telling
//!   to run `bash scripts/test.sh`. They run one at a time (one broker; the
//!   outage demo stops it).
//! - `RA_C_LIB_DIR` (optional): link and run against the
//!   `libresilient_amqp.so` in that directory instead of this build's.
//! - Memory checking (`bash scripts/memcheck.sh` sets these):
//!   - `RA_C_SANITIZE=1` builds the C side with `-fsanitize=address,undefined`
//!     and runs it with LeakSanitizer on (`detect_leaks=1`, suppressions from
//!     `tests/lsan.supp`). The Rust library is not instrumented, but ASan's
//!     malloc/free interceptors cover its allocations too, so LSan sees leaks
//!     on both sides.
//!   - `RA_C_VALGRIND=1` runs every program (not the compiler) under valgrind
//!     memcheck (`--leak-check=full --errors-for-leak-kinds=definite
//!     --error-exitcode=99`, suppressions from `tests/valgrind.supp`).
//!
//!   In both modes the time limits are multiplied by `RA_C_TIME_SCALE`
//!   (default 2 for ASan, 8 for valgrind), which is also passed to the
//!   programs as `RA_TEST_TIME_SCALE` (ra_test.h scales its alarm() and
//!   waits with it); a sanitizer or valgrind report anywhere in stderr
//!   (forked children included) fails the program; and one summary line per
//!   program is printed to stderr and appended to the file
//!   `RA_C_MEMCHECK_REPORT` when it is set.

mod common;

use common::{ctl_prefix, ctl_try, unique_name, uri};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "c_programs/harness.rs"]
mod harness;

use harness::*;

// ------------------------------------------------------------------- broker --

/// Broker programs run one at a time: they share one node, and the outage
/// demo stops it.
fn broker_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ----------------------------------------------------------- test programs --

/// Compiles and runs one program of tests/c/, checks its exit status and that
/// its stdout holds only PASS/FAIL/# lines and at least one PASS.
fn run_c_test(name: &str, b: Build, needs_broker: bool, limit_s: u64) {
    let _guard = if needs_broker {
        uri(); // fail early and clearly without a broker
        Some(broker_lock())
    } else {
        None
    };
    let dir = work_dir(name);
    let exe = dir.join(name);
    compile(&b, &exe);
    let r = run_with_timeout(program(&exe), limit(limit_s));
    check_memory(name, &r, &dir);
    let stray: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| !(l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("# ")))
        .collect();
    let passes = r.stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    let fails: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL "))
        .collect();
    let ok =
        !r.timed_out && r.code == Some(0) && fails.is_empty() && stray.is_empty() && passes > 0;
    if !ok {
        // The PASS lines are many and say little: show the rest.
        let shown = RunResult {
            stdout: format!(
                "({passes} PASS lines omitted)\n{}",
                r.stdout
                    .lines()
                    .filter(|l| !l.starts_with("PASS "))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            stderr: r.stderr.clone(),
            ..r
        };
        panic!(
            "{}\nfailed checks:\n  {}\nstdout lines that are not PASS/FAIL/#: {:?}\n(binary kept in {})",
            describe(name, &shown),
            fails.join("\n  "),
            stray,
            dir.display()
        );
    }
    eprintln!(
        "{name}: {passes} checks passed in {:.1} s",
        r.elapsed.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every program in tests/c/ must be run by a test here.
const C_PROGRAMS: &[&str] = &[
    "api_invalid.c",
    "last_error.c",
    "log_callback.c",
    "header_c11.c",
    "header_cpp.cpp",
    "with_rabbitmq_c.c",
    "roundtrip.c",
    "callback_publish.c",
    "callback_consume_stop.c",
    "callback_close.c",
    "consume_release.c",
    "consume_unwound.c",
    "exit_without_close.c",
    "login_refused.c",
    "fork_after_use.c",
    "fork_before_use.c",
    "exit_paths.c",
    "exit_atexit.c",
    "pull_mode.c",
    "delivery_reports.c",
    "queue_args.c",
    "message_properties.c",
];

#[test]
fn every_c_program_has_a_test() {
    let dir = Path::new(MANIFEST_DIR).join("tests/c");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/c") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if (name.ends_with(".c") || name.ends_with(".cpp")) && !C_PROGRAMS.contains(&name.as_str())
        {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/c programs not run by tests/c_programs.rs: {missing:?}"
    );
}

// -- no broker needed --

#[test]
fn c_api_invalid() {
    run_c_test("api_invalid", Build::c("tests/c/api_invalid.c"), false, 120);
}

#[test]
fn c_last_error() {
    run_c_test("last_error", Build::c("tests/c/last_error.c"), false, 60);
}

#[test]
fn c_log_callback() {
    run_c_test(
        "log_callback",
        Build::c("tests/c/log_callback.c"),
        false,
        90,
    );
}

#[test]
fn c_header_c11_pedantic() {
    let b = Build {
        pedantic: true,
        ..Build::c("tests/c/header_c11.c")
    };
    run_c_test("header_c11", b, false, 30);
}

#[test]
fn c_header_cpp17() {
    let b = Build {
        lang: Lang::Cpp,
        ..Build::c("tests/c/header_cpp.cpp")
    };
    run_c_test("header_cpp", b, false, 30);
}

#[test]
fn c_with_rabbitmq_c_header_first() {
    let b = Build {
        libs_before: &["-lrabbitmq"],
        ..Build::c("tests/c/with_rabbitmq_c.c")
    };
    run_c_test("with_rabbitmq_c", b, false, 30);
}

#[test]
fn c_with_rabbitmq_c_ours_first() {
    let b = Build {
        libs_before: &["-lrabbitmq"],
        defines: &["-DRA_OURS_FIRST"],
        ..Build::c("tests/c/with_rabbitmq_c.c")
    };
    run_c_test("with_rabbitmq_c_ours_first", b, false, 30);
}

/// No dynamic symbol is defined by both our library and rabbitmq-c's.
#[test]
fn exported_symbols_do_not_clash_with_rabbitmq_c() {
    let ours = lib_dir().join("libresilient_amqp.so");
    let theirs = Command::new("gcc")
        .arg("-print-file-name=librabbitmq.so")
        .output()
        .expect("gcc");
    let theirs = PathBuf::from(String::from_utf8_lossy(&theirs.stdout).trim());
    assert!(
        theirs.is_absolute() && theirs.is_file(),
        "librabbitmq.so not found (librabbitmq-dev)"
    );
    let syms = |p: &Path| -> std::collections::BTreeSet<String> {
        let out = Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(p)
            .output()
            .expect("nm (binutils)");
        assert!(out.status.success(), "nm -D {} failed", p.display());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(2)
                    .map(|s| s.split('@').next().unwrap().to_string())
            })
            .collect()
    };
    let a = syms(&ours);
    let b = syms(&theirs);
    assert!(
        a.contains("amqp_connect"),
        "our library does not export amqp_connect"
    );
    let both: Vec<&String> = a.intersection(&b).collect();
    assert!(
        both.is_empty(),
        "symbols defined by both libraries: {both:?}"
    );
}

// -- broker needed --

#[test]
fn c_roundtrip() {
    run_c_test("roundtrip", Build::c("tests/c/roundtrip.c"), true, 120);
}

#[test]
fn c_delivery_reports() {
    run_c_test(
        "delivery_reports",
        Build::c("tests/c/delivery_reports.c"),
        true,
        120,
    );
}

#[test]
fn c_queue_args() {
    run_c_test("queue_args", Build::c("tests/c/queue_args.c"), true, 120);
}

#[test]
fn c_message_properties() {
    run_c_test(
        "message_properties",
        Build::c("tests/c/message_properties.c"),
        true,
        120,
    );
}

#[test]
fn c_pull_mode() {
    run_c_test("pull_mode", Build::c("tests/c/pull_mode.c"), true, 120);
}

#[test]
fn c_callback_publish() {
    run_c_test(
        "callback_publish",
        Build::c("tests/c/callback_publish.c"),
        true,
        90,
    );
}

#[test]
fn c_callback_consume_stop() {
    run_c_test(
        "callback_consume_stop",
        Build::c("tests/c/callback_consume_stop.c"),
        true,
        120,
    );
}

#[test]
fn c_callback_close() {
    run_c_test(
        "callback_close",
        Build::c("tests/c/callback_close.c"),
        true,
        90,
    );
}

#[test]
fn c_consume_release() {
    run_c_test(
        "consume_release",
        Build::c("tests/c/consume_release.c"),
        true,
        90,
    );
}

#[test]
fn c_consume_unwound() {
    run_c_test(
        "consume_unwound",
        Build::c("tests/c/consume_unwound.c"),
        true,
        90,
    );
}

#[test]
fn c_login_refused() {
    run_c_test(
        "login_refused",
        Build::c("tests/c/login_refused.c"),
        true,
        90,
    );
}

#[test]
fn c_exit_without_close() {
    run_c_test(
        "exit_without_close",
        Build::c("tests/c/exit_without_close.c"),
        true,
        150,
    );
}

#[test]
fn c_fork_after_use() {
    run_c_test(
        "fork_after_use",
        Build::c("tests/c/fork_after_use.c"),
        true,
        120,
    );
}

#[test]
fn c_fork_before_use() {
    run_c_test(
        "fork_before_use",
        Build::c("tests/c/fork_before_use.c"),
        true,
        120,
    );
}

#[test]
fn c_exit_paths() {
    run_c_test("exit_paths", Build::c("tests/c/exit_paths.c"), true, 240);
}

/// Library calls from atexit() handlers: glibc runs the calling thread's TLS
/// destructors before the atexit handlers, so the library must not need its
/// thread-locals there (it once aborted on LAST_ERROR and tokio's context).
#[test]
fn c_exit_atexit() {
    run_c_test("exit_atexit", Build::c("tests/c/exit_atexit.c"), true, 120);
}

// -- the examples --

#[test]
fn example_publisher_then_consumer() {
    let uri = uri();
    let _guard = broker_lock();
    let dir = work_dir("examples");
    let publisher = dir.join("publisher");
    let consumer = dir.join("consumer");
    compile(&Build::c("examples-c/publisher.c"), &publisher);
    compile(&Build::c("examples-c/consumer.c"), &consumer);
    let queue = unique_name("example");

    let mut cmd = program(&publisher);
    cmd.args([uri.as_str(), queue.as_str(), "3000"]);
    let r = run_with_timeout(cmd, limit(60));
    check_memory("publisher", &r, &dir);
    assert!(r.code == Some(0), "{}", describe("publisher", &r));
    assert!(
        r.stdout.contains("published 3000 messages"),
        "{}",
        describe("publisher", &r)
    );
    assert!(
        r.stdout.contains("unsent: 0"),
        "{}",
        describe("publisher", &r)
    );

    let mut cmd = program(&consumer);
    let seconds = (30 * time_scale()).to_string();
    cmd.args([uri.as_str(), queue.as_str(), "3000", seconds.as_str()]);
    let r = run_with_timeout(cmd, limit(60));
    check_memory("consumer", &r, &dir);
    assert!(r.code == Some(0), "{}", describe("consumer", &r));
    assert!(
        r.stdout.contains("received 3000 messages"),
        "{}",
        describe("consumer", &r)
    );

    if std::env::var("RESILIENT_AMQP_TEST_CTL").is_ok_and(|v| !v.is_empty()) {
        let _ = ctl_try(&format!("delete_queue '{queue}'"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The RPC example: a server and a client on two connections, replies
/// matched by correlation_id through a server-named reply queue, across a
/// broker restart (the second half of the requests is published while the
/// broker is down; their replies to the old reply queue come back
/// unroutable and the requests are sent again with its new name).
#[test]
fn example_rpc() {
    let uri = uri();
    let ctl_cmd = ctl_prefix();
    let _guard = broker_lock();
    let dir = work_dir("rpc");
    let exe = dir.join("rpc");
    compile(&Build::c("examples-c/rpc.c"), &exe);
    let mut cmd = program(&exe);
    let seconds = (60 * time_scale()).to_string();
    cmd.args([uri.as_str(), "500", seconds.as_str()]);
    cmd.env("DEMO_CTL", &ctl_cmd);
    let r = run_with_timeout(cmd, limit(150));
    if r.timed_out || r.code != Some(0) {
        let _ = ctl_try("start_app");
    }
    check_memory("rpc", &r, &dir);
    assert!(r.code == Some(0), "{}", describe("rpc", &r));
    for want in [
        "answered 500 of 500 requests",
        "across a broker restart",
        " 0 wrong",
        "client AMQP_OK (unsent 0)",
        "server AMQP_OK (unsent 0",
    ] {
        assert!(r.stdout.contains(want), "{want}: {}", describe("rpc", &r));
    }
    eprintln!("{}", tail(&r.stdout, 600));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The outage demo: the broker application is stopped and started while
/// 20,000 messages are published; nothing may be lost.
#[test]
fn example_outage_demo() {
    let uri = uri();
    let ctl_cmd = ctl_prefix();
    let _guard = broker_lock();
    let dir = work_dir("outage_demo");
    let exe = dir.join("outage_demo");
    compile(&Build::c("examples-c/outage_demo.c"), &exe);
    let mut cmd = program(&exe);
    cmd.env("DEMO_URI", &uri).env("DEMO_CTL", &ctl_cmd);
    let r = run_with_timeout(cmd, limit(150));
    // Whatever happened, leave the broker running for the next test.
    if r.timed_out || r.code != Some(0) {
        let _ = ctl_try("start_app");
    }
    check_memory("outage_demo", &r, &dir);
    assert!(
        r.code == Some(0) && !r.timed_out,
        "{}",
        describe("outage_demo", &r)
    );
    assert!(
        r.stdout.contains("RESULT: OK"),
        "{}",
        describe("outage_demo", &r)
    );
    eprintln!("{}", tail(&r.stdout, 1500));
    let _ = std::fs::remove_dir_all(&dir);
}
