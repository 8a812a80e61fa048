//! The scenarios: each injects one fault while the library publishes (and consumes).

use super::*;

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// 1. close_all_connections every 0.5 s (publish + consume).
pub(crate) fn s_close_all(cfg: &Cfg) -> Vec<Row> {
    let label = "1. close_all_connections every 0.5 s";
    let mut conns = ConnGuards::new();
    let con = con_prepare(cfg, "closeall", &mut conns);
    let side = pub_start(
        cfg,
        &cfg.uri_with("heartbeat=2"),
        "closeall",
        DURABLE_PERSISTENT,
        &mut conns,
    );
    con_begin(cfg, &con);
    std::thread::sleep(cfg.lead_in);
    let first = Instant::now();
    let mut last = first;
    let mut closes = 0;
    let mut slow = Duration::ZERO;
    while first.elapsed() < cfg.close_all_for {
        let t = Instant::now();
        last = t;
        ctl("-q close_all_connections");
        closes += 1;
        slow = slow.max(t.elapsed());
        if let Some(w) = Duration::from_millis(500).checked_sub(t.elapsed()) {
            std::thread::sleep(w);
        }
    }
    let end = Instant::now();
    let fault = Fault {
        first,
        last,
        end,
        instant: true,
    };
    say(&format!(
        "{closes} close_all_connections done (slowest ctl {:.2} s)",
        secs(slow)
    ));
    std::thread::sleep(cfg.lead_out);
    let mut prow = Row::new(label, "publish");
    pub_finish(cfg, side, fault, &mut prow);
    prow.notes.push(format!("{closes} closes"));
    let mut crow = Row::new("6a. consumers under close_all every 0.5 s", "consume");
    con_finish(cfg, con, fault, &mut crow);
    vec![prow, crow]
}

/// 2. stop_app for 3 s, then start_app (publish + consume).
pub(crate) fn s_stop_app(cfg: &Cfg) -> Vec<Row> {
    let label = "2. stop_app 3 s, start_app";
    let mut conns = ConnGuards::new();
    let con = con_prepare(cfg, "stopapp", &mut conns);
    let side = pub_start(
        cfg,
        &cfg.uri_with("heartbeat=2"),
        "stopapp",
        DURABLE_PERSISTENT,
        &mut conns,
    );
    con_begin(cfg, &con);
    std::thread::sleep(cfg.lead_in);
    let first = Instant::now();
    let mut fault = Fault {
        first,
        last: first,
        end: first,
        instant: false,
    };
    let mut notes = Vec::new();
    for round in 0..cfg.stop_app_rounds {
        if round > 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        fault.last = Instant::now();
        ctl("-q stop_app");
        let stopped = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let (ok, open_at, out) = run_until_port_open(cfg, ctl_command("-q start_app"));
        assert!(
            ok,
            "start_app failed ({}): {}",
            sockets_on_port(cfg),
            compact(&out, 400)
        );
        fault.end = open_at.unwrap_or_else(Instant::now);
        notes.push(format!(
            "stop_app took {:.1} s, down {:.1} s",
            delta(fault.last, stopped),
            delta(fault.last, fault.end)
        ));
    }
    std::thread::sleep(cfg.lead_out);
    let mut prow = Row::new(label, "publish");
    prow.notes.extend(notes.iter().cloned());
    pub_finish(cfg, side, fault, &mut prow);
    let mut crow = Row::new("6b. consumers under stop_app 3 s", "consume");
    crow.notes.extend(notes.iter().cloned());
    con_finish(cfg, con, fault, &mut crow);
    vec![prow, crow]
}

/// 3. SIGKILL of the broker, restarted 2 s later with its data (publish + consume).
pub(crate) fn s_kill(cfg: &Cfg) -> Vec<Row> {
    let label = "3. SIGKILL broker, restart 2 s later";
    let mut conns = ConnGuards::new();
    let con = con_prepare(cfg, "kill", &mut conns);
    let side = pub_start(
        cfg,
        &cfg.uri_with("heartbeat=2"),
        "kill",
        DURABLE_PERSISTENT,
        &mut conns,
    );
    con_begin(cfg, &con);
    std::thread::sleep(cfg.lead_in);
    let first = Instant::now();
    let mut fault = Fault {
        first,
        last: first,
        end: first,
        instant: false,
    };
    let mut notes = Vec::new();
    let mut handled_before_kill = Vec::new();
    for round in 0..cfg.kill_rounds {
        if round > 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        fault.last = Instant::now();
        handled_before_kill.push(con.rec.finished());
        let before = qstats(side.q);
        let out = broker_cmd(cfg, &["kill"]).output().expect("broker.sh kill");
        assert!(
            out.status.success(),
            "broker.sh kill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let killed = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let restart = Instant::now();
        let (ok, open_at, out) = run_until_port_open(cfg, broker_cmd(cfg, &["start"]));
        assert!(
            ok,
            "broker.sh start (keep data) failed ({}): {}",
            sockets_on_port(cfg),
            compact(&out, 400)
        );
        fault.end = open_at.unwrap_or_else(Instant::now);
        // what the broker recovered, against what it had confirmed: tells a broker that lost
        // confirmed messages in the unclean restart from a library that misapplied confirms
        notes.push(format!(
            "before the kill: {} published, {} confirmed; recovered: {}",
            before.published,
            before.confirmed,
            queue_depths(cfg, &[&side.name, &con.name])
        ));
        notes.push(format!(
            "kill took {:.2} s, broker boot {:.1} s, down {:.1} s",
            delta(fault.last, killed),
            delta(restart, fault.end),
            delta(fault.last, fault.end)
        ));
    }
    std::thread::sleep(cfg.lead_out);
    let mut prow = Row::new(label, "publish");
    prow.notes.extend(notes.iter().cloned());
    pub_finish(cfg, side, fault, &mut prow);
    let mut crow = Row::new("6c. consumers under SIGKILL + restart", "consume");
    crow.notes.extend(notes.iter().cloned());
    con_finish(cfg, con, fault, &mut crow);
    crow.notes.push(format!(
        "callbacks finished before each kill: {handled_before_kill:?} (acks the broker had not \
         yet written to disk come back as redeliveries: at-least-once)"
    ));
    vec![prow, crow]
}

/// 4. A silent blackhole between library and broker (publish).
pub(crate) fn s_blackhole(cfg: &Cfg) -> Vec<Row> {
    blackhole(cfg, "4. network blackhole (heartbeat=2)", false)
}

/// 4b. The same on an idle connection (nothing published during the blackhole): only the
/// heartbeats can tell.
pub(crate) fn s_blackhole_idle(cfg: &Cfg) -> Vec<Row> {
    blackhole(cfg, "4b. network blackhole, idle connection", true)
}

pub(crate) fn blackhole(cfg: &Cfg, label: &str, idle: bool) -> Vec<Row> {
    let mut conns = ConnGuards::new();
    let proxy = Proxy::start(cfg.addr);
    let uri = cfg.uri_via(proxy.port, "heartbeat=2&connection_timeout=2000");
    let side = pub_start(cfg, &uri, "blackhole", DURABLE_PERSISTENT, &mut conns);
    let conn = side.conn;
    std::thread::sleep(cfg.lead_in);
    if idle {
        side.publisher.paused.store(true, Ordering::SeqCst);
        let q = side.q;
        wait_for("idle before the blackhole", Duration::from_secs(30), || {
            qstats(q).buffered == 0
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    let c0 = cstats(conn).connects;
    let first = Instant::now();
    proxy.blackhole.store(true, Ordering::SeqCst);
    // watch for the state leaving CONNECTED (the monitor samples too; this is finer)
    let mut detect = None;
    while first.elapsed() < cfg.blackhole_for {
        if detect.is_none() {
            let s = cstats(conn);
            if s.state != amqp_connection_state::AMQP_STATE_CONNECTED || s.connects > c0 {
                detect = Some(first.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    proxy.blackhole.store(false, Ordering::SeqCst);
    let end = Instant::now();
    side.publisher.paused.store(false, Ordering::SeqCst);
    let mut detect_after_heal = None;
    if detect.is_none() {
        poll(Duration::from_secs(60), Duration::from_millis(2), || {
            let s = cstats(conn);
            let lost = s.state != amqp_connection_state::AMQP_STATE_CONNECTED || s.connects > c0;
            if lost {
                detect_after_heal = Some(first.elapsed());
            }
            lost
        });
    }
    let fault = Fault {
        first,
        last: first,
        end,
        instant: false,
    };
    std::thread::sleep(cfg.lead_out);
    let mut row = Row::new(label, "publish");
    match (detect, detect_after_heal) {
        (Some(d), _) => {
            row.detect = Some(secs(d));
            row.notes.push(format!(
                "blackhole {:.0} s{}: CONNECTED left {:.2} s after it began (2 heartbeats = 4 s)",
                secs(cfg.blackhole_for),
                if idle {
                    ", nothing published during it"
                } else {
                    ""
                },
                secs(d)
            ));
            row.check(secs(d) <= 7.0, || {
                format!(
                    "the blackhole was noticed after {:.2} s, far more than 2 heartbeats (4 s)",
                    secs(d)
                )
            });
        }
        (None, d) => {
            row.detect = d.map(secs);
            row.fail(format!(
                "the blackhole was NOT noticed during {:.0} s (2 heartbeats = 4 s); noticed {} after it began, i.e. only once traffic flowed again",
                secs(cfg.blackhole_for),
                fmt_opt(d.map(secs))
            ));
        }
    }
    pub_finish(cfg, side, fault, &mut row);
    row.notes.push(format!(
        "{} proxied connections, connection_timeout=2000",
        proxy.accepted.load(Ordering::SeqCst)
    ));
    drop(conns);
    drop(proxy);
    vec![row]
}

/// 4c. The network resets the connection (a TCP RST to the library, a close to the broker) while
/// publishing, with the library's default heartbeat (10 s): the reset itself must be noticed, not
/// the missing heartbeats. LAPIN-NOTES saw lapin notice a reset only at its next heartbeat.
pub(crate) fn s_reset(cfg: &Cfg) -> Vec<Row> {
    reset(cfg, "4c. connection reset (RST), heartbeat 10 s", false)
}

/// 4d. The same on an idle connection.
pub(crate) fn s_reset_idle(cfg: &Cfg) -> Vec<Row> {
    reset(
        cfg,
        "4d. connection reset (RST), idle, heartbeat 10 s",
        true,
    )
}

pub(crate) fn reset(cfg: &Cfg, label: &str, idle: bool) -> Vec<Row> {
    let mut conns = ConnGuards::new();
    let proxy = Proxy::start(cfg.addr);
    let uri = cfg.uri_via(proxy.port, "heartbeat=10&connection_timeout=2000");
    let side = pub_start(cfg, &uri, "reset", DURABLE_PERSISTENT, &mut conns);
    let conn = side.conn;
    std::thread::sleep(cfg.lead_in);
    if idle {
        side.publisher.paused.store(true, Ordering::SeqCst);
        let q = side.q;
        wait_for("idle before the reset", Duration::from_secs(30), || {
            qstats(q).buffered == 0
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    let c0 = cstats(conn).connects;
    let first = Instant::now();
    proxy.reset_all();
    let mut detect = None;
    poll(Duration::from_secs(60), Duration::from_millis(1), || {
        let s = cstats(conn);
        let lost = s.state != amqp_connection_state::AMQP_STATE_CONNECTED || s.connects > c0;
        if lost {
            detect = Some(first.elapsed());
        }
        lost
    });
    side.publisher.paused.store(false, Ordering::SeqCst);
    let fault = Fault {
        first,
        last: first,
        end: first,
        instant: true,
    };
    std::thread::sleep(cfg.lead_out);
    let mut row = Row::new(label, "publish");
    row.detect = detect.map(secs);
    match detect {
        Some(d) => {
            row.notes.push(format!(
                "reset{}: CONNECTED left {:.3} s after it",
                if idle { " while idle" } else { "" },
                secs(d)
            ));
            row.check(secs(d) <= 2.0, || {
                format!(
                    "the reset was noticed only after {:.2} s (a RST should be noticed at once)",
                    secs(d)
                )
            });
        }
        None => row.fail("the reset was not noticed within 60 s"),
    }
    pub_finish(cfg, side, fault, &mut row);
    row.notes.push(format!(
        "{} proxied connections",
        proxy.accepted.load(Ordering::SeqCst)
    ));
    drop(conns);
    drop(proxy);
    vec![row]
}

/// 5. A memory alarm: the broker blocks publishers; publishes buffer, nothing is lost.
pub(crate) fn s_alarm(cfg: &Cfg) -> Vec<Row> {
    let label = "5. memory alarm (connection.blocked)";
    let mut conns = ConnGuards::new();
    let side = pub_start(
        cfg,
        &cfg.uri_with("heartbeat=2"),
        "alarm",
        DURABLE_PERSISTENT,
        &mut conns,
    );
    let conn = side.conn;
    let q = side.q;
    // at most the messages in flight when the block began are confirmed during it
    let window = side.window;
    std::thread::sleep(cfg.lead_in);
    let c0 = cstats(conn).connects;
    let first = Instant::now();
    ctl("-q set_vm_memory_high_watermark 0.00001");
    let raised = Instant::now();
    // the alarm is on when `status` lists it
    std::thread::sleep(Duration::from_millis(500));
    let alarm_listed = ctl("-q status").contains("Memory alarm");
    let s1 = qstats(q);
    let t1 = Instant::now();
    std::thread::sleep(cfg.alarm_for.saturating_sub(first.elapsed()));
    let s2 = qstats(q);
    let during = delta(t1, Instant::now());
    ctl("-q set_vm_memory_high_watermark 0.4");
    let end = Instant::now();
    let fault = Fault {
        first,
        last: first,
        end,
        instant: false,
    };
    std::thread::sleep(cfg.lead_out);
    let mut row = Row::new(label, "publish");
    let grew = s2.confirmed - s1.confirmed;
    row.notes.push(format!(
        "alarm raised in {:.2} s, listed by status: {alarm_listed}; during {during:.1} s of alarm: +{grew} confirmed, buffered {} -> {}",
        delta(first, raised),
        s1.buffered,
        s2.buffered
    ));
    row.check(alarm_listed, || {
        "the memory alarm did not show in status".into()
    });
    row.check(grew <= window && s2.buffered > s1.buffered, || {
        format!(
            "publishing was not blocked: +{grew} confirmed (publish window {window}), buffered {} -> {}",
            s1.buffered, s2.buffered
        )
    });
    pub_finish(cfg, side, fault, &mut row);
    // a block is not a reason to reconnect
    let reconnects = row.reconnects;
    row.check(reconnects == 0 && c0 == 1, || {
        format!("the library reconnected during the block ({reconnects} reconnects)")
    });
    if reconnects == 0 {
        row.notes.push("connection kept through the block".into());
    }
    vec![row]
}
