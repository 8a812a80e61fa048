//! How tests/c_programs.rs builds and runs a C program: the library to link, gcc/g++, the
//! memory-checking modes (ASan + UBSan, valgrind) and their reports, a run under a time limit.

use super::*;

pub(crate) const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

// ------------------------------------------------------------------ library --

/// The directory holding `libresilient_amqp.so` of this build profile.
///
/// `cargo test` (and `cargo test --release`) compile the cdylib into
/// `target/<profile>/deps/` but, unlike `cargo build`, do not copy it up to
/// `target/<profile>/`. The copy in `deps/` is the one built for this very
/// test run, so it is used; `cargo build` for the same profile is the
/// fallback when it is missing.
pub(crate) fn lib_dir() -> &'static Path {
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

pub(crate) fn include_dir() -> PathBuf {
    let dir = Path::new(MANIFEST_DIR).join("include");
    assert!(
        dir.join("resilient_amqp.h").is_file(),
        "include/resilient_amqp.h is missing (build.rs generates it with cbindgen)"
    );
    dir
}

/// A fresh directory for one program's binary.
pub(crate) fn work_dir(name: &str) -> PathBuf {
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
pub(crate) enum Lang {
    C,
    Cpp,
}

pub(crate) struct Build<'a> {
    pub(crate) source: &'a str, // relative to the repository root
    pub(crate) lang: Lang,
    pub(crate) pedantic: bool,
    pub(crate) defines: &'a [&'a str],     // e.g. "-DRA_OURS_FIRST"
    pub(crate) libs_before: &'a [&'a str], // linked before ours, e.g. "-lrabbitmq"
}

impl<'a> Build<'a> {
    pub(crate) fn c(source: &'a str) -> Self {
        Build {
            source,
            lang: Lang::C,
            pedantic: false,
            defines: &[],
            libs_before: &[],
        }
    }
}

pub(crate) fn compile(b: &Build, out: &Path) {
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
pub(crate) enum Mode {
    Plain,
    Sanitize,
    Valgrind,
}

pub(crate) fn mode() -> Mode {
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
pub(crate) fn time_scale() -> u64 {
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

pub(crate) fn limit(secs: u64) -> Duration {
    Duration::from_secs(secs * time_scale())
}

/// A suppression file of tests/, when it exists.
pub(crate) fn supp_file(name: &str) -> Option<PathBuf> {
    let p = Path::new(MANIFEST_DIR).join("tests").join(name);
    p.is_file().then_some(p)
}

/// The command that runs the program `exe` in this mode.
pub(crate) fn program(exe: &Path) -> Command {
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
pub(crate) struct MemReport {
    pub(crate) processes: u64, // valgrind: processes that printed an ERROR SUMMARY
    pub(crate) errors: u64,    // valgrind: the sum of their error counts; ASan/UBSan/LSan: reports
    pub(crate) definitely_lost: u64, // bytes (valgrind "definitely lost", LSan "Direct leak")
    pub(crate) suppressed_leaks: u64, // LSan: processes that used a suppression; valgrind: suppressed errors
}

pub(crate) fn first_number(s: &str) -> u64 {
    let digits: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    digits.parse().unwrap_or(0)
}

pub(crate) fn mem_report(stderr: &str) -> MemReport {
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
pub(crate) fn check_memory(name: &str, r: &RunResult, dir: &Path) {
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

pub(crate) struct RunResult {
    pub(crate) code: Option<i32>,
    /// The signal that ended it, if one did.
    pub(crate) signal: Option<i32>,
    pub(crate) timed_out: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
}

pub(crate) fn read_all_in_thread(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` in its own process group; kills the whole group after `limit`.
pub(crate) fn run_with_timeout(mut cmd: Command, limit: Duration) -> RunResult {
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
    use std::os::unix::process::ExitStatusExt;
    RunResult {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: grab(out_rx),
        stderr: grab(err_rx),
        elapsed,
    }
}

pub(crate) fn describe(name: &str, r: &RunResult) -> String {
    format!(
        "{name}: {} after {:.1} s\n---- stdout ----\n{}\n---- stderr (last 8000 bytes) ----\n{}\n",
        if r.timed_out {
            "TIMED OUT (process group killed)".to_string()
        } else {
            match r.code {
                Some(c) => format!("exit status {c}"),
                None => match r.signal {
                    // SAFETY: strsignal's text is read before another call.
                    Some(sig) => format!("killed by signal {sig} ({})", unsafe {
                        std::ffi::CStr::from_ptr(libc::strsignal(sig)).to_string_lossy()
                    }),
                    None => "killed by a signal".to_string(),
                },
            }
        },
        r.elapsed.as_secs_f64(),
        r.stdout,
        tail(&r.stderr, 8000)
    )
}

pub(crate) fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
