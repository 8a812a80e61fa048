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

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

// ------------------------------------------------------------------ library --

/// The directory holding `libresilient_amqp.so` of this build profile.
///
/// `cargo test` (and `cargo test --release`) compile the cdylib into
/// `target/<profile>/deps/` but, unlike `cargo build`, do not copy it up to
/// `target/<profile>/`. The copy in `deps/` is the one built for this very
/// test run, so it is used; `cargo build` for the same profile is the
/// fallback when it is missing.
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // scripts/memcheck.sh: a private copy, safe from concurrent rebuilds
        if let Ok(dir) = std::env::var("RA_C_LIB_DIR") {
            if !dir.is_empty() {
                let dir = PathBuf::from(dir);
                assert!(
                    dir.join("libresilient_amqp.so").is_file(),
                    "RA_C_LIB_DIR={} holds no libresilient_amqp.so",
                    dir.display()
                );
                return dir;
            }
        }
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("deps dir").to_path_buf();
        let profile_dir = deps.parent().expect("profile dir").to_path_buf();
        if deps.join("libresilient_amqp.so").is_file() {
            return deps;
        }
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(name) => name.to_string(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target_dir = profile_dir.parent().expect("target dir");
        let status = Command::new(&cargo)
            .args(["build", "--lib", "--profile", &profile, "--manifest-path"])
            .arg(Path::new(MANIFEST_DIR).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --profile {profile} failed");
        assert!(
            profile_dir.join("libresilient_amqp.so").is_file(),
            "no libresilient_amqp.so in {} nor in {} after cargo build",
            deps.display(),
            profile_dir.display()
        );
        profile_dir
    })
}

fn include_dir() -> PathBuf {
    let dir = Path::new(MANIFEST_DIR).join("include");
    assert!(
        dir.join("resilient_amqp.h").is_file(),
        "include/resilient_amqp.h is missing (build.rs generates it with cbindgen)"
    );
    dir
}

/// A fresh directory for one program's binary.
fn work_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "resilient-amqp-c-{}-{}-{}",
        std::process::id(),
        name,
        nanos
    ));
    std::fs::create_dir_all(&dir).expect("creating the temp dir");
    dir
}

// ------------------------------------------------------------------ compile --

#[derive(Clone, Copy, PartialEq)]
enum Lang {
    C,
    Cpp,
}

struct Build<'a> {
    source: &'a str, // relative to the repository root
    lang: Lang,
    pedantic: bool,
    defines: &'a [&'a str],     // e.g. "-DRA_OURS_FIRST"
    libs_before: &'a [&'a str], // linked before ours, e.g. "-lrabbitmq"
}

impl<'a> Build<'a> {
    fn c(source: &'a str) -> Self {
        Build {
            source,
            lang: Lang::C,
            pedantic: false,
            defines: &[],
            libs_before: &[],
        }
    }
}

fn compile(b: &Build, out: &Path) {
    let root = Path::new(MANIFEST_DIR);
    let lib = lib_dir();
    let (compiler, std) = match b.lang {
        Lang::C => ("gcc", "-std=c11"),
        Lang::Cpp => ("g++", "-std=c++17"),
    };
    let mut cmd = Command::new(compiler);
    cmd.arg(std)
        .args(["-Wall", "-Wextra", "-Werror", "-pthread", "-g"]);
    if b.pedantic {
        cmd.arg("-pedantic");
    }
    if mode() == Mode::Sanitize {
        cmd.args(["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]);
    }
    cmd.arg("-I").arg(include_dir());
    cmd.arg("-I").arg(root.join("tests/c"));
    cmd.args(b.defines);
    cmd.arg(root.join(b.source));
    cmd.arg("-o").arg(out);
    cmd.args(b.libs_before);
    cmd.arg(format!("-L{}", lib.display()));
    cmd.arg("-lresilient_amqp");
    cmd.arg(format!("-Wl,-rpath,{}", lib.display()));
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            panic!("cannot run {compiler} ({e}); install gcc/g++ (apt-get install build-essential)")
        }
    };
    assert!(
        output.status.success(),
        "compiling {} failed:\n{:?}\n{}{}",
        b.source,
        cmd,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ------------------------------------------------------------------ memcheck --

/// How the C programs are checked: plain, ASan + UBSan, or valgrind memcheck.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Plain,
    Sanitize,
    Valgrind,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let on = |v: &str| std::env::var(v).as_deref() == Ok("1");
        match (on("RA_C_SANITIZE"), on("RA_C_VALGRIND")) {
            (false, false) => Mode::Plain,
            (true, false) => Mode::Sanitize,
            (false, true) => Mode::Valgrind,
            (true, true) => panic!("RA_C_SANITIZE=1 and RA_C_VALGRIND=1 exclude each other"),
        }
    })
}

/// The factor for every time limit of this mode (`RA_C_TIME_SCALE`).
fn time_scale() -> u64 {
    let default = match mode() {
        Mode::Plain => 1,
        Mode::Sanitize => 2,
        Mode::Valgrind => 8,
    };
    match std::env::var("RA_C_TIME_SCALE") {
        Ok(v) if !v.is_empty() => match v.parse::<u64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => panic!("RA_C_TIME_SCALE must be an integer in 1..=100 (got {v:?})"),
        },
        _ => default,
    }
}

fn limit(secs: u64) -> Duration {
    Duration::from_secs(secs * time_scale())
}

/// A suppression file of tests/, when it exists.
fn supp_file(name: &str) -> Option<PathBuf> {
    let p = Path::new(MANIFEST_DIR).join("tests").join(name);
    p.is_file().then_some(p)
}

/// The command that runs the program `exe` in this mode.
fn program(exe: &Path) -> Command {
    let scale = time_scale().to_string();
    let mut cmd = match mode() {
        Mode::Plain | Mode::Sanitize => Command::new(exe),
        Mode::Valgrind => {
            let mut c = Command::new("valgrind");
            c.args([
                "--tool=memcheck",
                "--error-exitcode=99",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--show-leak-kinds=definite",
                "--num-callers=40",
                // tokio and crossbeam spin briefly; without fair scheduling a
                // spinning thread can hold valgrind's big lock for long
                "--fair-sched=yes",
            ]);
            if let Some(s) = supp_file("valgrind.supp") {
                c.arg(format!("--suppressions={}", s.display()));
            }
            c.arg(exe);
            c
        }
    };
    cmd.env("RA_TEST_TIME_SCALE", &scale);
    if mode() == Mode::Sanitize {
        // print_suppressions=1: a used suppression shows (and is counted)
        let mut lsan = "print_suppressions=1".to_string();
        if let Some(s) = supp_file("lsan.supp") {
            lsan = format!("suppressions={}:{lsan}", s.display());
        }
        // the caller's settings come last and win
        let join = |ours: String, var: &str| match std::env::var(var) {
            Ok(theirs) if !theirs.is_empty() => format!("{ours}:{theirs}"),
            _ => ours,
        };
        cmd.env(
            "ASAN_OPTIONS",
            join(
                "detect_leaks=1:detect_stack_use_after_return=1".into(),
                "ASAN_OPTIONS",
            ),
        );
        cmd.env("LSAN_OPTIONS", join(lsan, "LSAN_OPTIONS"));
        cmd.env(
            "UBSAN_OPTIONS",
            join("print_stacktrace=1:halt_on_error=1".into(), "UBSAN_OPTIONS"),
        );
    }
    cmd
}

/// What the sanitizers or valgrind reported in a program's stderr (every
/// process of it: forked children report there too).
#[derive(Default, Debug)]
struct MemReport {
    processes: u64,        // valgrind: processes that printed an ERROR SUMMARY
    errors: u64,           // valgrind: the sum of their error counts; ASan/UBSan/LSan: reports
    definitely_lost: u64,  // bytes (valgrind "definitely lost", LSan "Direct leak")
    suppressed_leaks: u64, // LSan: processes that used a suppression; valgrind: suppressed errors
}

fn first_number(s: &str) -> u64 {
    let digits: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    digits.parse().unwrap_or(0)
}

fn mem_report(stderr: &str) -> MemReport {
    let mut r = MemReport::default();
    for line in stderr.lines() {
        match mode() {
            Mode::Plain => {}
            Mode::Valgrind => {
                if let Some(i) = line.find("ERROR SUMMARY: ") {
                    r.processes += 1;
                    let rest = &line[i + "ERROR SUMMARY: ".len()..];
                    r.errors += first_number(rest);
                    if let Some(j) = rest.find("suppressed: ") {
                        r.suppressed_leaks += first_number(&rest[j + "suppressed: ".len()..]);
                    }
                } else if let Some(i) = line.find("definitely lost: ") {
                    r.definitely_lost += first_number(&line[i + "definitely lost: ".len()..]);
                }
            }
            Mode::Sanitize => {
                if line.contains("ERROR: AddressSanitizer")
                    || line.contains("ERROR: LeakSanitizer")
                    || line.contains("runtime error:")
                {
                    r.errors += 1;
                } else if let Some(i) = line.find("Direct leak of ") {
                    r.definitely_lost += first_number(&line[i + "Direct leak of ".len()..]);
                } else if line.trim_start().starts_with("Suppressions used:") {
                    r.suppressed_leaks += 1;
                }
            }
        }
    }
    r
}

/// Checks the memory report of a run: panics (with the whole output) on any
/// sanitizer or valgrind error; prints and records one summary line.
fn check_memory(name: &str, r: &RunResult, dir: &Path) {
    if mode() == Mode::Plain {
        return;
    }
    let m = mem_report(&r.stderr);
    let line = format!(
        "memcheck {:?} {name}: exit {:?}, {:.1} s, processes {}, errors {}, definitely lost {} bytes, suppressed {}",
        mode(),
        r.code,
        r.elapsed.as_secs_f64(),
        m.processes,
        m.errors,
        m.definitely_lost,
        m.suppressed_leaks
    );
    eprintln!("{line}");
    if let Ok(path) = std::env::var("RA_C_MEMCHECK_REPORT") {
        if !path.is_empty() {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }
    let bad =
        m.errors > 0 || m.definitely_lost > 0 || (mode() == Mode::Valgrind && m.processes == 0);
    assert!(
        !bad,
        "{line}\n{}\n---- full stderr ----\n{}\n(binary kept in {})",
        if m.processes == 0 && mode() == Mode::Valgrind {
            "valgrind printed no ERROR SUMMARY (did it run?)"
        } else {
            "memory errors or leaks reported"
        },
        r.stderr,
        dir.display()
    );
}

// ---------------------------------------------------------------------- run --

struct RunResult {
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn read_all_in_thread(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` in its own process group; kills the whole group after `limit`.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> RunResult {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawning the C program");
    let out_rx = read_all_in_thread(child.stdout.take().unwrap());
    let err_rx = read_all_in_thread(child.stderr.take().unwrap());
    let pgid = child.id() as libc::pid_t;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() >= limit {
            timed_out = true;
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    // Leftover processes of the group (e.g. forked children) would keep the
    // pipes open: end them, and never wait for the pipes forever.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let grab = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(10))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| "<output not closed>".into())
    };
    RunResult {
        code: status.code(),
        timed_out,
        stdout: grab(out_rx),
        stderr: grab(err_rx),
        elapsed,
    }
}

fn describe(name: &str, r: &RunResult) -> String {
    format!(
        "{name}: {} after {:.1} s\n---- stdout ----\n{}\n---- stderr (last 8000 bytes) ----\n{}\n",
        if r.timed_out {
            "TIMED OUT (process group killed)".to_string()
        } else {
            match r.code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            }
        },
        r.elapsed.as_secs_f64(),
        r.stdout,
        tail(&r.stderr, 8000)
    )
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

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
    "exit_without_close.c",
    "login_refused.c",
    "fork_after_use.c",
    "fork_before_use.c",
    "exit_paths.c",
    "exit_atexit.c",
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
