//! Driving the broker the suite disrupts (broker.sh, rabbitmqctl), putting it back, its log,
//! and the independent reader that counts what reached it.

use super::*;

// ---------------------------------------------------------------------------------------------
// Broker control
// ---------------------------------------------------------------------------------------------

/// Is the broker listening on `addr`? Read from /proc/net/tcp (a socket in LISTEN state), NOT
/// by connecting: the test ports lie inside the kernel's ephemeral range (32768-60999), and a
/// connect to a port nobody listens on can pick that very port as its own source port and
/// connect to itself (TCP self-connect). Closing it leaves a TIME_WAIT on the port that makes the
/// broker's listen fail with eaddrinuse for 60 s (seen: start_app failed after a fast connect
/// poll during stop_app). Falls back to a connect where /proc/net/tcp is missing.
pub(crate) fn port_open(addr: SocketAddr) -> bool {
    match std::fs::read_to_string("/proc/net/tcp") {
        Ok(table) => {
            let want = format!(":{:04X}", addr.port());
            table.lines().skip(1).any(|l| {
                let mut f = l.split_whitespace();
                let (Some(_), Some(local), Some(_), Some(st)) =
                    (f.next(), f.next(), f.next(), f.next())
                else {
                    return false;
                };
                // 127.0.0.1 or 0.0.0.0, state 0A = LISTEN
                st == "0A"
                    && local.ends_with(&want)
                    && (local.starts_with("0100007F:") || local.starts_with("00000000:"))
            })
        }
        Err(_) => TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok(),
    }
}

pub(crate) fn broker_cmd(cfg: &Cfg, args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg(&cfg.broker_sh)
        .args(args)
        .env("RA_BROKER_PORT", cfg.port.to_string())
        .env("RA_BROKER_KEEP_DATA", "1")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` and polls the AMQP port while it runs; returns when the command ended, with the
/// instant the port first accepted connections (None if never).
pub(crate) fn run_until_port_open(cfg: &Cfg, mut cmd: Command) -> (bool, Option<Instant>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // read the pipes in threads so the child never blocks on them
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let ho = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let he = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let mut open_at = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if open_at.is_none() && port_open(cfg.addr) {
            open_at = Some(Instant::now());
        }
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if open_at.is_none() && port_open(cfg.addr) {
        open_at = Some(Instant::now());
    }
    let out = format!(
        "{}{}",
        ho.join().unwrap_or_default(),
        he.join().unwrap_or_default()
    );
    (status.success(), open_at, out)
}

/// Puts the broker back the way the suite found it: node running (restarted with its data if
/// killed), application started, memory watermark 0.4. Called after every scenario, on every path.
pub(crate) fn restore_broker(cfg: &Cfg) -> Result<(), String> {
    let mut notes = Vec::new();
    if !port_open(cfg.addr) {
        let alive = broker_cmd(cfg, &["status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if alive {
            let (ok, _, err) = ctl_try("-q start_app");
            if !ok {
                notes.push(format!("start_app: {}", compact(&err, 300)));
            }
            poll(Duration::from_secs(10), Duration::from_millis(100), || {
                port_open(cfg.addr)
            });
        }
        // Not up (node dead, or the app cannot start again, e.g. after a failed start_app):
        // restart the node with its data, a few times (a TIME_WAIT on the port lasts 60 s).
        let deadline = Instant::now() + Duration::from_secs(100);
        while !port_open(cfg.addr) && Instant::now() < deadline {
            notes.push(format!(
                "restarting the node with its data ({})",
                sockets_on_port(cfg)
            ));
            let _ = broker_cmd(cfg, &["stop"]).output();
            match broker_cmd(cfg, &["start"]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    notes.push(format!(
                        "broker.sh start failed: {}",
                        compact(&String::from_utf8_lossy(&out.stderr), 300)
                    ));
                    std::thread::sleep(Duration::from_secs(5));
                }
                Err(e) => return Err(format!("cannot run broker.sh: {e}")),
            }
        }
    }
    let (ok, _, err) = ctl_try("-q set_vm_memory_high_watermark 0.4");
    if !ok {
        notes.push(format!(
            "set_vm_memory_high_watermark 0.4: {}",
            compact(&err, 300)
        ));
    }
    if !notes.is_empty() {
        say(&format!("restore: {}", notes.join("; ")));
    }
    if !port_open(cfg.addr) {
        return Err(format!(
            "broker not accepting connections after restore ({})",
            notes.join("; ")
        ));
    }
    Ok(())
}

/// `s` on one line, at most `max` characters.
pub(crate) fn compact(s: &str, max: usize) -> String {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    t.chars().take(max).collect()
}

/// `name messages` of the given queues as the broker lists them (rabbitmqctl list_queues).
pub(crate) fn queue_depths(cfg: &Cfg, names: &[&str]) -> String {
    let out = broker_cmd(cfg, &["ctl", "-q", "list_queues", "name", "messages"]).output();
    let Ok(out) = out else {
        return "list_queues did not run".into();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let found: Vec<String> = text
        .lines()
        .filter(|l| names.iter().any(|n| l.split_whitespace().next() == Some(n)))
        .map(|l| compact(l, 200))
        .collect();
    if found.is_empty() {
        format!("none of {names:?} listed ({})", compact(&text, 200))
    } else {
        found.join("; ")
    }
}

/// What holds the AMQP port (`ss`), for failure messages: a TIME-WAIT with the port as both
/// ends is a TCP self-connect.
pub(crate) fn sockets_on_port(cfg: &Cfg) -> String {
    Command::new("ss")
        .args(["-tanH", &format!("sport = :{}", cfg.port)])
        .output()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if t.is_empty() {
                "no socket on the port".to_string()
            } else {
                format!("sockets on the port: {t}")
            }
        })
        .unwrap_or_else(|e| format!("ss: {e}"))
}

/// Lines of the broker log that mean a bad ack (see BAD_LOG).
pub(crate) fn bad_log_lines(cfg: &Cfg) -> Result<Vec<String>, String> {
    let dir = std::fs::read_dir(&cfg.log_dir)
        .map_err(|e| format!("cannot read broker log dir {}: {e}", cfg.log_dir.display()))?;
    let mut lines = Vec::new();
    let mut any = false;
    for ent in dir.flatten() {
        let p = ent.path();
        if p.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        any = true;
        let text = std::fs::read(&p).map_err(|e| e.to_string())?;
        for l in String::from_utf8_lossy(&text).lines() {
            if BAD_LOG.iter().any(|b| l.contains(b)) {
                lines.push(l.to_string());
            }
        }
    }
    if !any {
        return Err(format!("no *.log file in {}", cfg.log_dir.display()));
    }
    Ok(lines)
}

// ---------------------------------------------------------------------------------------------
// The independent reader: plain lapin, consumes a whole queue (no-ack) and deletes it
// ---------------------------------------------------------------------------------------------

/// Messages as (body, delivery mode).
pub(crate) type Drained = Vec<(Vec<u8>, Option<u8>)>;

/// Every message of `queue` as (body, delivery mode); the queue is deleted afterwards.
pub(crate) fn drain_and_delete(uri: &str, queue: &str) -> Result<Drained, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut conn = None;
        for _ in 0..150 {
            match lapin::Connection::connect(uri, lapin::ConnectionProperties::default()).await {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let conn = conn.ok_or("reader: cannot connect")?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .map_err(|e| format!("reader: queue {queue}: {e}"))?;
        let expected = q.message_count() as usize;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "fault-suite-reader".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(expected);
        // until the count the broker announced, then anything that might still come
        loop {
            let wait = if out.len() < expected {
                Duration::from_secs(15)
            } else {
                Duration::from_millis(300)
            };
            match tokio::time::timeout(wait, consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    let mode = *d.properties.delivery_mode();
                    out.push((d.data, mode))
                }
                Ok(Some(Err(e))) => return Err(format!("reader: {e}")),
                Ok(None) | Err(_) => break,
            }
        }
        if out.len() < expected {
            return Err(format!(
                "reader: the broker announced {expected} messages, got only {}",
                out.len()
            ));
        }
        let _ = ch.queue_delete(queue.into(), Default::default()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "OK".into())).await;
        Ok(out)
    })
}
