#!/usr/bin/env python3
"""Aggregates the benchmark runs of scripts/bench.sh (standard library only).

  aggregate.py meta [--mode M --runs R ...]   print a JSON line describing machine and versions
  aggregate.py meta-end                       print a JSON line with the load at the end
  aggregate.py line JSON                      print a one-line human summary of a driver line
  aggregate.py report RAW OUTDIR              RAW (JSON lines) -> OUTDIR/results.{md,json,svg}

Medians over runs, with min and max next to them. Throughput is compared as the ratio
ours / rabbitmq-c of the medians; the spread of that ratio is the min..max over the
per-run pairs (run k of ours against run k of rabbitmq-c, which ran right before or after it).
"""
import argparse
import datetime
import html
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CLIENTS = ["ours", "rabbitmq-c"]
THROUGHPUT = [  # (test, label in the table, short label in the chart)
    ("pub_transient_64", "confirmed publish, 64 B, transient", "publish 64 B transient"),
    ("pub_durable_64", "confirmed publish, 64 B, durable + persistent", "publish 64 B durable"),
    (
        "pub_durable_64_nomandatory",
        "confirmed publish, 64 B, durable + persistent, mandatory off",
        "publish 64 B durable, not mandatory",
    ),
    ("pub_props_64", "confirmed publish, 64 B, transient, 5 string properties + 3 headers",
     "publish 64 B with properties"),
    ("pub_transient_4k", "confirmed publish, 4 KiB, transient", "publish 4 KiB transient"),
    ("consume_64", "consume + ack, 64 B, prefetch 500", "consume + ack 64 B"),
    ("consume_pull_64", "consume + ack, 64 B, prefetch 500, ours in pull mode (amqp_poll)",
     "consume + ack 64 B, pull"),
    ("pub_tls_64", "confirmed publish, 64 B, transient, over TLS (ours: rustls; rabbitmq-c: OpenSSL)",
     "publish 64 B over TLS"),
    ("consume_tls_64", "consume + ack, 64 B, prefetch 500, over TLS", "consume + ack 64 B over TLS"),
]
LATENCY = [("latency_1t", "1 thread"), ("latency_8t", "8 threads")]
# producer threads on one connection: (test, threads, queues)
THREADS = [("threads_8x1", 8, 1), ("threads_8x8", 8, 8), ("threads_32x1", 32, 1), ("threads_32x8", 32, 8)]
# The spool case: ours in memory against ours with the on-disk spool (no rabbitmq-c).
SPOOL_TEST = "pub_spool_64"
SPOOL_VARIANTS = [("ours", "in memory"), ("ours-spool-batch", "spool, spool_sync=batch"),
                  ("ours-spool-always", "spool, spool_sync=always")]
PCTS = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]


# ---------------------------------------------------------------------------- meta


def sh(cmd):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        return out.stdout.strip()
    except Exception:  # noqa: BLE001 - best effort
        return ""


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cargo_lock_version(name):
    m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), read(os.path.join(ROOT, "Cargo.lock")))
    return m.group(1) if m else "?"


def cmd_meta(args):
    cpuinfo = read("/proc/cpuinfo")
    models = re.findall(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", read("/proc/meminfo"), re.M)
    beams = sh("pgrep -c -x beam.smp") or "0"
    meta = {
        "kind": "meta",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "mode": args.mode,
        "runs": args.runs,
        "n": args.n,
        "n_4k": args.n_4k,
        "e2e_seconds": args.e2e_seconds,
        "broker_port": args.port,
        "note": args.note,
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "cpu_model": models[0] if models else platform.processor() or "?",
            "cpus_in_cpuinfo": len(models),
            "ram_gib": round(int(mem.group(1)) / 1048576, 1) if mem else None,
            "kernel": platform.release(),
            "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource").strip(),
            "loadavg_start": read("/proc/loadavg").split()[:3],
            "other_beam_processes_at_start": int(beams) - 1 if beams.isdigit() and int(beams) > 0 else 0,
        },
        "versions": {
            "resilient_amqp_git": (sh("git -C %s rev-parse --short HEAD" % ROOT) or "?")
            + (" (uncommitted changes)" if sh("git -C %s status --porcelain -- src Cargo.toml" % ROOT) else ""),
            "rustc": sh("rustc --version"),
            "lapin": cargo_lock_version("lapin"),
            "tokio": cargo_lock_version("tokio"),
            "rabbitmq_server": sh("dpkg-query -W -f='${Version}' rabbitmq-server"),
            "erlang": sh("dpkg-query -W -f='${Version}' erlang-base"),
            "librabbitmq": sh("dpkg-query -W -f='${Version}' librabbitmq4"),
            "librabbitmq_amqp_version": sh("%s version" % args.rmqc) if args.rmqc else "",
            "gcc": sh("gcc --version | head -n 1"),
            "python": platform.python_version(),
        },
    }
    print(json.dumps(meta))


def cmd_meta_end(_args):
    beams = sh("pgrep -c -x beam.smp") or "0"
    print(json.dumps({
        "kind": "meta_end",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "loadavg_end": read("/proc/loadavg").split()[:3],
        "other_beam_processes_at_end": int(beams) - 1 if beams.isdigit() and int(beams) > 0 else 0,
    }))


# ---------------------------------------------------------------------------- formatting


def fmt_ns(ns):
    if ns is None:
        return "–"
    ns = float(ns)
    if ns < 1000:
        return "%.0f ns" % ns
    if ns < 1e6:
        return "%.3g µs" % (ns / 1e3)
    if ns < 1e9:
        return "%.3g ms" % (ns / 1e6)
    return "%.3g s" % (ns / 1e9)


def fmt_rate(x):
    if x is None:
        return "–"
    return "{:,.0f}".format(x)


def fmt_g(x, digits=3):
    if x is None:
        return "–"
    return "%.*g" % (digits, x)


def cmd_line(args):
    try:
        r = json.loads(args.json)
    except ValueError:
        print("    (unparsable driver output: %r)" % args.json[:200])
        return
    head = "    %-10s run %s: " % (r.get("client", "?"), r.get("run", "?"))
    mode = r.get("mode")
    if not r.get("ok"):
        print(head + "FAILED: " + str(r.get("error", "?")))
        return
    n = r.get("n")
    if mode == "publish":
        s = "%s msg/s, %s µs CPU/msg, confirmed %s/%s" % (
            fmt_rate(r["msgs_per_s"]), fmt_g(r["cpu_us_per_msg"]), r["confirmed"], n)
    elif mode == "consume":
        s = "%s msg/s, %s µs CPU/msg, consumed %s/%s" % (
            fmt_rate(r["msgs_per_s"]), fmt_g(r["cpu_us_per_msg"]), r["consumed"], n)
        if "vol_ctx_switches_per_msg" in r:
            s += ", context switches/msg %s voluntary + %s involuntary" % (
                fmt_g(r["vol_ctx_switches_per_msg"]), fmt_g(r["invol_ctx_switches_per_msg"]))
    elif mode == "latency":
        s = "publish call p50 %s, p99 %s, p99.9 %s, max %s; confirmed %s/%s" % (
            fmt_ns(r["call_p50_ns"]), fmt_ns(r["call_p99_ns"]), fmt_ns(r["call_p999_ns"]),
            fmt_ns(r["call_max_ns"]), r["confirmed"], n)
    elif mode == "e2e":
        s = "end-to-end p50 %s, p99 %s, p99.9 %s, max %s at %s msg/s; received %s/%s" % (
            fmt_ns(r["e2e_p50_ns"]), fmt_ns(r["e2e_p99_ns"]), fmt_ns(r["e2e_p999_ns"]),
            fmt_ns(r["e2e_max_ns"]), fmt_rate(r["achieved_rate"]), r["received"], n)
    elif mode == "threads":
        s = "%s msg/s over %s threads / %s queues; call p50 %s, p99 %s, p99.9 %s; confirmed %s/%s" % (
            fmt_rate(r["msgs_per_s"]), r["threads"], r["queues"], fmt_ns(r["call_p50_ns"]),
            fmt_ns(r["call_p99_ns"]), fmt_ns(r["call_p999_ns"]), r["confirmed"], n)
    elif mode == "memory":
        s = "RSS %s -> %s kB with %s buffered: +%.1f MB, %.0f B/msg; unsent at close %s" % (
            r["rss_before_kb"], r["rss_after_kb"], r["buffered"], r["growth_mb"], r["bytes_per_msg"],
            r["unsent"])
    elif mode == "many":
        s = "%s queues: publish %s msg/s, consume %s msg/s, %s µs CPU/msg consuming, %s threads, RSS %s kB" % (
            r["queues"], fmt_rate(r["pub_msgs_per_s"]), fmt_rate(r["msgs_per_s"]),
            fmt_g(r["cpu_us_per_msg"]), r["threads_consuming"], r["rss_kb"])
    else:
        s = json.dumps(r)
    print(head + s + "  ok")


# ---------------------------------------------------------------------------- aggregation


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values), "values": values}


def load(raw):
    lines = []
    with open(raw) as f:
        for ln in f:
            ln = ln.strip()
            if ln:
                try:
                    lines.append(json.loads(ln))
                except ValueError:
                    lines.append({"kind": "garbage", "text": ln[:300], "ok": False})
    return lines


def aggregate(lines):
    meta = next((x for x in lines if x.get("kind") == "meta"), {})
    meta_end = next((x for x in lines if x.get("kind") == "meta_end"), {})
    runs = [x for x in lines if x.get("kind") == "run" and x.get("mode") in
            ("publish", "consume", "latency", "e2e", "memory", "threads")]
    fills = [x for x in lines if x.get("kind") == "run" and x.get("mode") == "fill"]
    verifies = [x for x in lines if x.get("kind") == "verify"]

    def of(test, client, ok_only=True):
        rs = [r for r in runs if r.get("test") == test and r.get("client") == client]
        return [r for r in rs if r.get("ok")] if ok_only else rs

    res = {"meta": meta, "meta_end": meta_end, "throughput": [], "publish_call_latency": [],
           "e2e_latency": None, "memory": None, "producer_threads": [], "correctness": [], "failures": []}

    for test, label, short in THROUGHPUT:
        o, t = of(test, "ours"), of(test, "rabbitmq-c")
        if not o and not t:
            continue
        ob = {r["run"]: r["msgs_per_s"] for r in o}
        tb = {r["run"]: r["msgs_per_s"] for r in t}
        pairs = [ob[k] / tb[k] for k in sorted(ob) if k in tb and tb[k] > 0]
        so, st = summary(list(ob.values())), summary(list(tb.values()))
        entry = {
            "test": test, "label": label, "short": short,
            "n": (o or t)[0].get("n"), "size": (o or t)[0].get("size"),
            "msgs_per_s": {"ours": so, "rabbitmq-c": st},
            "ratio_ours_over_rabbitmq_c": {
                "of_medians": so["median"] / st["median"] if so and st and st["median"] else None,
                "pairs": summary(pairs),
            },
            "cpu_us_per_msg": {"ours": summary([r.get("cpu_us_per_msg") for r in o]),
                               "rabbitmq-c": summary([r.get("cpu_us_per_msg") for r in t])},
        }
        res["throughput"].append(entry)

    mem = {r["run"]: r["msgs_per_s"] for r in of(SPOOL_TEST, "ours")}
    spool = []
    for client, label in SPOOL_VARIANTS:
        rs = of(SPOOL_TEST, client)
        if not rs:
            continue
        by = {r["run"]: r["msgs_per_s"] for r in rs}
        s, m = summary(list(by.values())), summary(list(mem.values()))
        spool.append({
            "client": client, "label": label, "n": rs[0].get("n"), "msgs_per_s": s,
            "cpu_us_per_msg": summary([r.get("cpu_us_per_msg") for r in rs]),
            "ratio_over_in_memory": {
                "of_medians": s["median"] / m["median"] if s and m and m["median"] else None,
                "pairs": summary([by[k] / mem[k] for k in sorted(by) if k in mem and mem[k] > 0]),
            },
        })
    res["spool"] = spool

    for test, label in LATENCY:
        o, t = of(test, "ours"), of(test, "rabbitmq-c")
        if not o and not t:
            continue
        entry = {"test": test, "label": label, "threads": (o or t)[0].get("threads"),
                 "n": (o or t)[0].get("n"), "percentiles_ns": {},
                 "timer_overhead_ns": summary([r.get("timer_overhead_ns") for r in o + t])}
        for key, _ in PCTS:
            entry["percentiles_ns"][key] = {
                "ours": summary([r.get("call_%s_ns" % key) for r in o]),
                "rabbitmq-c": summary([r.get("call_%s_ns" % key) for r in t])}
        entry["percentiles_ns"]["mean"] = {
            "ours": summary([r.get("call_mean_ns") for r in o]),
            "rabbitmq-c": summary([r.get("call_mean_ns") for r in t])}
        res["publish_call_latency"].append(entry)

    res["producer_threads"] = producer_threads(of)

    o, t = of("e2e_10k", "ours"), of("e2e_10k", "rabbitmq-c")
    if o or t:
        e = {"rate": (o or t)[0].get("rate"), "n": (o or t)[0].get("n"), "percentiles_ns": {}}
        for key, _ in PCTS:
            e["percentiles_ns"][key] = {"ours": summary([r.get("e2e_%s_ns" % key) for r in o]),
                                        "rabbitmq-c": summary([r.get("e2e_%s_ns" % key) for r in t])}
        for k in ("achieved_rate", "max_send_lag_ns", "cpu_us_per_msg"):
            e[k] = {"ours": summary([r.get(k) for r in o]),
                    "rabbitmq-c": summary([r.get(k) for r in t])}
        res["e2e_latency"] = e

    m = of("memory_1m", "ours")
    if m:
        res["memory"] = {
            "n": m[0].get("n"), "size": m[0].get("size"),
            "growth_mb": summary([r.get("growth_mb") for r in m]),
            "bytes_per_msg": summary([r.get("bytes_per_msg") for r in m]),
            "rss_before_kb": summary([r.get("rss_before_kb") for r in m]),
            "rss_after_kb": summary([r.get("rss_after_kb") for r in m]),
            "rss_after_close_kb": summary([r.get("rss_after_close_kb") for r in m]),
            "rss_after_trim_kb": summary([r.get("rss_after_trim_kb") for r in m]),
            "publish_calls_per_s": summary([r.get("calls_per_s") for r in m]),
            "rabbitmq-c": "N/A (no buffer: rabbitmq-c writes to the socket or fails)",
        }

    # correctness: every run, its own count and the broker's
    vmap = {(v.get("client"), v.get("test"), v.get("run")): v for v in verifies}
    for r in runs + fills:
        if not r.get("ok"):
            res["failures"].append({"client": r.get("client"), "test": r.get("test"), "run": r.get("run"),
                                    "mode": r.get("mode"), "error": r.get("error")})
    for v in verifies:
        if not v.get("ok"):
            res["failures"].append({"client": v.get("client"), "test": v.get("test"), "run": v.get("run"),
                                    "mode": "broker check", "error": "broker has %s messages, %s unacked; expected %s, 0"
                                    % (v.get("messages"), v.get("unacked"), v.get("expected_messages"))})
    for x in lines:
        if x.get("kind") == "garbage":
            res["failures"].append({"test": "?", "client": "?", "run": "?", "mode": "?",
                                    "error": "unparsable line: " + x["text"]})
    keys = []
    for r in runs:
        k = (r.get("test"), r.get("client"))
        if k not in keys:
            keys.append(k)
    for test, client in keys:
        rs = of(test, client, ok_only=False)
        done = []
        for r0 in rs:
            r = {k: ("–" if v is None else v) for k, v in r0.items()}
            r.update({k: "–" for k in ("confirmed", "consumed", "received", "buffered", "unsent") if k not in r0})
            mode = r.get("mode")
            if mode in ("publish", "latency", "threads"):
                done.append("%s/%s confirmed" % (r.get("confirmed"), r.get("n")))
            elif mode == "consume":
                done.append("%s/%s consumed" % (r.get("consumed"), r.get("n")))
            elif mode == "e2e":
                done.append("%s/%s received" % (r.get("received"), r.get("n")))
            elif mode == "memory":
                done.append("%s/%s buffered, %s unsent at close" % (r.get("buffered"), r.get("n"), r.get("unsent")))
        vs = [vmap.get((client, test, r.get("run"))) for r in rs]
        broker = [("%s ready / %s unacked" % (v["messages"], v["unacked"])) for v in vs if v]
        res["correctness"].append({
            "test": test, "client": client, "runs": len(rs),
            "driver_ok": sum(1 for r in rs if r.get("ok")),
            "broker_checked": sum(1 for v in vs if v), "broker_ok": sum(1 for v in vs if v and v.get("ok")),
            "driver_counts": sorted(set(done)), "broker_counts": sorted(set(broker)),
        })
    res["runs"] = runs
    res["fills"] = fills
    res["verifications"] = verifies
    return res


def producer_threads(of):
    """The THREADS cases: rates (with the pair ratio) and call percentiles of each client."""
    out = []
    for test, threads, queues in THREADS:
        o, t = of(test, "ours"), of(test, "rabbitmq-c")
        if not o and not t:
            continue
        ob = {r.get("run"): r.get("msgs_per_s") for r in o}
        tb = {r.get("run"): r.get("msgs_per_s") for r in t}
        pairs = [ob[k] / tb[k] for k in ob if k in tb and tb[k]]
        e = {"test": test, "threads": threads, "queues": queues, "n": (o or t)[0].get("n"),
             "msgs_per_s": {"ours": summary(list(ob.values())), "rabbitmq-c": summary(list(tb.values()))},
             "ratio_pairs": summary(pairs), "percentiles_ns": {}}
        for key in ("p50", "p99", "p999"):
            e["percentiles_ns"][key] = {"ours": summary([r.get("call_%s_ns" % key) for r in o]),
                                        "rabbitmq-c": summary([r.get("call_%s_ns" % key) for r in t])}
        out.append(e)
    return out


def producer_threads_md(res, w):
    if not res.get("producer_threads"):
        return
    w("## Many producer threads, one connection")
    w("")
    w("Every thread publishes its share of N x 64 B (mandatory, transient queues), thread i to queue "
      "i % queues. Ours: `amqp_publish` on one queue handle per queue of one connection. rabbitmq-c: "
      "ONE connection shared under a mutex (it is not thread-safe), a confirm channel per queue, "
      "confirms streamed under the same lock (window 512 per channel); a call = lock + "
      "`amqp_basic_publish` + unlock. Rate: first call to last confirm.")
    w("")
    w("| threads x queues | ours msg/s | rabbitmq-c msg/s | ratio (pairs min-max) | call p99 ours / rabbitmq-c | call p99.9 ours / rabbitmq-c |")
    w("|---|---|---|---|---|---|")
    for e in res["producer_threads"]:
        r, p = e["ratio_pairs"], e["percentiles_ns"]
        w("| %s x %s | %s | %s | %s | %s / %s | %s / %s |" % (
            e["threads"], e["queues"], cell(e["msgs_per_s"]["ours"], fmt_rate),
            cell(e["msgs_per_s"]["rabbitmq-c"], fmt_rate),
            ("%.2f (%.2f-%.2f)" % (r["median"], r["min"], r["max"])) if r else "–",
            cell(p["p99"]["ours"], fmt_ns), cell(p["p99"]["rabbitmq-c"], fmt_ns),
            cell(p["p999"]["ours"], fmt_ns), cell(p["p999"]["rabbitmq-c"], fmt_ns)))
    w("")


# ---------------------------------------------------------------------------- markdown


def cell(s, fmt):
    if not s:
        return "–"
    if s["runs"] == 1:
        return fmt(s["median"])
    return "%s [%s – %s]" % (fmt(s["median"]), fmt(s["min"]), fmt(s["max"]))


def markdown(res):
    meta, end = res["meta"], res["meta_end"]
    mach, ver = meta.get("machine", {}), meta.get("versions", {})
    runs = meta.get("runs", "?")
    out = []
    w = out.append
    w("# resilient-amqp vs rabbitmq-c")
    w("")
    w("Generated by `bash scripts/bench.sh%s` on %s." % (" --quick" if meta.get("mode") == "quick" else "",
                                                          meta.get("date", "?")))
    if meta.get("mode") == "quick":
        w("")
        w("**Quick mode: 1 run of each with small counts. This is a build and correctness check, "
          "not a measurement; do not read speeds from it.**")
    if meta.get("note"):
        w("")
        w("**Note:** " + meta["note"])
    w("")
    w("Each cell is the median of %s run(s) with [min – max]. Runs alternate in ABBA order: ours, "
      "rabbitmq-c, rabbitmq-c, ours, ours, ..., each on a fresh queue of the same private RabbitMQ "
      "node. Nothing here is "
      "asserted; the script fails only when a run did not confirm/consume all its messages or the "
      "broker's count did not match." % runs)
    w("")
    w("## Machine and versions")
    w("")
    w("| | |")
    w("|---|---|")
    w("| CPUs (nproc) | %s × %s |" % (mach.get("nproc", "?"), mach.get("cpu_model", "?")))
    w("| RAM | %s GiB |" % mach.get("ram_gib", "?"))
    w("| kernel, clocksource | %s, %s |" % (mach.get("kernel", "?"), mach.get("clocksource", "?")))
    w("| load average (1/5/15 min) at start → end | %s → %s |" % (
        " ".join(mach.get("loadavg_start", [])), " ".join(end.get("loadavg_end", []))))
    w("| other RabbitMQ nodes (beam.smp) on the machine at start / end | %s / %s |" % (
        mach.get("other_beam_processes_at_start", "?"), end.get("other_beam_processes_at_end", "?")))
    w("| resilient-amqp | %s |" % ver.get("resilient_amqp_git", "?"))
    w("| rustc | %s |" % ver.get("rustc", "?"))
    w("| lapin, tokio | %s, %s |" % (ver.get("lapin", "?"), ver.get("tokio", "?")))
    w("| rabbitmq-server (Erlang) | %s (%s) |" % (ver.get("rabbitmq_server", "?"), ver.get("erlang", "?")))
    w("| librabbitmq (rabbitmq-c) | %s (amqp_version %s) |" % (ver.get("librabbitmq", "?"),
                                                               ver.get("librabbitmq_amqp_version", "?")))
    w("| C drivers | %s, -O2 |" % ver.get("gcc", "?"))
    w("")

    if res["throughput"]:
        w("## Throughput (messages/s)")
        w("")
        w("| case | messages | ours | rabbitmq-c | ours / rabbitmq-c (pairs min – max) | "
          "ours CPU µs/msg | rabbitmq-c CPU µs/msg |")
        w("|---|---|---|---|---|---|---|")
        for e in res["throughput"]:
            r = e["ratio_ours_over_rabbitmq_c"]
            ratio = "–"
            if r["of_medians"] is not None:
                ratio = "%.2f" % r["of_medians"]
                if r["pairs"] and r["pairs"]["runs"] > 1:
                    ratio += " (%.2f – %.2f)" % (r["pairs"]["min"], r["pairs"]["max"])
            w("| %s | %s × %s B | %s | %s | %s | %s | %s |" % (
                e["label"], "{:,}".format(e["n"]), e["size"],
                cell(e["msgs_per_s"]["ours"], fmt_rate), cell(e["msgs_per_s"]["rabbitmq-c"], fmt_rate), ratio,
                cell(e["cpu_us_per_msg"]["ours"], fmt_g), cell(e["cpu_us_per_msg"]["rabbitmq-c"], fmt_g)))
        w("")
        w("CPU is user + system time of the whole process (getrusage RUSAGE_SELF, all threads) over the "
          "timed part, divided by the messages; the broker's CPU is not included.")
        w("")
        w("Both clients send the same AMQP traffic: publisher confirms, delivery mode 2 only when "
          "durable, and the mandatory flag (our default, which lets us notice a deleted queue) except "
          "in the row that says 'mandatory off'. rabbitmq-c streams with up to 512 unconfirmed "
          "publishes; ours keeps the library's default buffer bounds (100,000 messages, 64 MiB) and "
          "publishes with `amqp_publish_wait`, which sleeps while the buffer is full.")
        w("")

    if res.get("spool"):
        w("## On-disk spool (pub_spool_64: confirmed publish, 64 B, transient; ours only)")
        w("")
        w("| variant | messages | msg/s | / in memory (pairs min – max) | CPU µs/msg |")
        w("|---|---|---|---|---|")
        for e in res["spool"]:
            r = e["ratio_over_in_memory"]
            ratio = "–"
            if r["of_medians"] is not None:
                ratio = "%.2f" % r["of_medians"]
                if r["pairs"] and r["pairs"]["runs"] > 1:
                    ratio += " (%.2f – %.2f)" % (r["pairs"]["min"], r["pairs"]["max"])
            w("| %s | %s | %s | %s | %s |" % (e["label"], "{:,}".format(e["n"] or 0),
                                               cell(e["msgs_per_s"], fmt_rate), ratio,
                                               cell(e["cpu_us_per_msg"], fmt_g)))
        w("")
        w("The spool (queue option spool_dir, docs/SPOOL.md) writes every message to a checksummed "
          "log before amqp_publish returns; batch syncs it every 10 ms, always before each "
          "amqp_publish returns (one fdatasync per message from one thread).")
        w("")

    if res["publish_call_latency"]:
        w("## Publish call latency")
        w("")
        warm = sorted({r.get("warmup", 0) for r in res["runs"] if r.get("mode") == "latency"
                       and r.get("client") == "ours"})
        how = ("cold: the first publishes of the process, into a buffer growing from nothing"
               if warm in ([], [0]) else
               "after a warm-up of %s untimed, confirmed publishes" % "/".join("{:,}".format(w) for w in warm))
        w("Ours: `amqp_publish` (copies into the buffer, never touches the network), " + how +
          ". rabbitmq-c, for context: `amqp_basic_publish` (writes the frames to the socket), one "
          "connection per thread, confirms read in between (not timed).")
        w("")
        w("| threads | | ours | rabbitmq-c |")
        w("|---|---|---|---|")
        for e in res["publish_call_latency"]:
            for key, name in PCTS + [("mean", "mean")]:
                p = e["percentiles_ns"][key]
                w("| %s | %s | %s | %s |" % (e["threads"], name, cell(p["ours"], fmt_ns), cell(p["rabbitmq-c"], fmt_ns)))
        to = res["publish_call_latency"][0].get("timer_overhead_ns")
        if to:
            w("")
            w("Timer: clock_gettime(CLOCK_MONOTONIC) around each call; a back-to-back pair of reads costs "
              "%s (included in every sample)." % fmt_ns(to["median"]))
        w("")

    e = res["e2e_latency"]
    if e:
        w("## End-to-end latency (publish → consumer callback, same process)")
        w("")
        w("%s msg/s for %s s (%s messages, 64 B), timestamp in the body. Ours: one connection, "
          "`amqp_publish` + `amqp_consume` (prefetch 500) on one queue handle. rabbitmq-c: a publisher "
          "(confirms streamed) and a consumer thread on a second connection (prefetch 500)." % (
              "{:,}".format(e["rate"]), meta.get("e2e_seconds", "?"), "{:,}".format(e["n"])))
        w("")
        w("| | ours | rabbitmq-c |")
        w("|---|---|---|")
        for key, name in PCTS:
            p = e["percentiles_ns"][key]
            w("| %s | %s | %s |" % (name, cell(p["ours"], fmt_ns), cell(p["rabbitmq-c"], fmt_ns)))
        w("| achieved publish rate | %s | %s |" % (cell(e["achieved_rate"]["ours"], fmt_rate),
                                                 cell(e["achieved_rate"]["rabbitmq-c"], fmt_rate)))
        w("| worst lateness of a send behind its 100 µs slot | %s | %s |" % (
            cell(e["max_send_lag_ns"]["ours"], fmt_ns), cell(e["max_send_lag_ns"]["rabbitmq-c"], fmt_ns)))
        w("| process CPU µs/msg (sender + consumer) | %s | %s |" % (
            cell(e["cpu_us_per_msg"]["ours"], fmt_g), cell(e["cpu_us_per_msg"]["rabbitmq-c"], fmt_g)))
        w("")

    producer_threads_md(res, w)

    m = res["memory"]
    if m:
        w("## Memory while the broker is unreachable")
        w("")
        w("| | ours | rabbitmq-c |")
        w("|---|---|---|")
        w("| RSS growth, %s × %s B buffered | %s MB | N/A (no buffer) |" % (
            "{:,}".format(m["n"]), m["size"], cell(m["growth_mb"], lambda x: "%.1f" % x)))
        w("| per buffered message | %s B | N/A |" % cell(m["bytes_per_msg"], lambda x: "%.0f" % x))
        w("| RSS before → after (kB) | %s → %s | N/A |" % (cell(m["rss_before_kb"], str), cell(m["rss_after_kb"], str)))
        w("| RSS after close (discarded) / after malloc_trim (kB) | %s / %s | N/A |" % (
            cell(m["rss_after_close_kb"], str), cell(m["rss_after_trim_kb"], str)))
        w("| amqp_publish calls/s into the buffer | %s | N/A |" % cell(m["publish_calls_per_s"], fmt_rate))
        w("")

    w("## Correctness of every run")
    w("")
    w("| case | client | runs | driver ok | broker check ok | counts (driver) | counts (rabbitmqctl list_queues) |")
    w("|---|---|---|---|---|---|---|")
    for c in res["correctness"]:
        w("| %s | %s | %d | %d | %s | %s | %s |" % (
            c["test"], c["client"], c["runs"], c["driver_ok"],
            ("%d/%d" % (c["broker_ok"], c["broker_checked"])) if c["broker_checked"] else "– (no broker)",
            "; ".join(c["driver_counts"]), "; ".join(c["broker_counts"]) or "–"))
    w("")
    if res["failures"]:
        w("**Failures:**")
        w("")
        for f in res["failures"]:
            w("- %s %s run %s (%s): %s" % (f.get("test"), f.get("client"), f.get("run"), f.get("mode"), f.get("error")))
        w("")
    else:
        w("Every run did all its work and every broker count matched.")
        w("")
    w("## How each case is measured")
    w("")
    w("- **publish**: ours calls `amqp_publish` for every message (buffer bounds raised so none is "
      "refused), then polls `amqp_queue_get_stats` every 1 ms until `buffered == 0`; timed from the "
      "first publish to that moment. rabbitmq-c publishes with publisher confirms, keeping up to 512 "
      "publishes outstanding and reading basic.ack frames (multiple or not) as they arrive; timed from "
      "the first publish to the last confirm. Transient = non-durable queue, no delivery mode; "
      "durable = durable queue + delivery mode 2.")
    w("- **consume**: the queue is pre-filled (untimed) by rabbitmq-c. Ours: `amqp_consume(repeat 1)` "
      "with `prefetch=500`, the callback returns `AMQP_ACK`; timed from `amqp_consume` to the callback "
      "that counts the last message. rabbitmq-c: basic.qos 500, basic.consume, then "
      "`amqp_consume_message` + `amqp_basic_ack` per message. Afterwards the broker must show 0 ready "
      "and 0 unacked.")
    w("- **publish call latency**: every call timed with clock_gettime(CLOCK_MONOTONIC); nearest-rank "
      "percentiles over all calls of all threads.")
    w("- **end-to-end**: the sender sleeps until each 100 µs slot (clock_nanosleep, absolute), stamps "
      "CLOCK_MONOTONIC into the body and publishes; the consumer subtracts. 200 warm-up messages first "
      "(not counted).")
    w("- **memory**: ours connects to a local port nobody listens on, buffers 1,000,000 × 64 B, and "
      "reads VmRSS from /proc/self/status before and after.")
    w("")
    return "\n".join(out)


# ---------------------------------------------------------------------------- SVG

C_OURS, C_THEIRS, C_RATIO = "#1f77b4", "#ff7f0e", "#2ca02c"


class Svg:
    def __init__(self, width):
        self.w = width
        self.y = 0
        self.parts = []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", weight="normal", color="#222"):
        self.add('<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" font-weight="%s" fill="%s">%s</text>'
                 % (x, y, size, anchor, weight, color, html.escape(str(s))))

    def rect(self, x, y, w, h, color, title=None):
        t = "<title>%s</title>" % html.escape(title) if title else ""
        self.add('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">%s</rect>'
                 % (x, y, max(w, 0.5), h, color, t))

    def line(self, x1, y1, x2, y2, color="#999", width=1, dash=None):
        d = ' stroke-dasharray="%s"' % dash if dash else ""
        self.add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%s"%s/>'
                 % (x1, y1, x2, y2, color, width, d))

    def render(self):
        return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
                'font-family="DejaVu Sans, Arial, sans-serif">\n<rect width="100%%" height="100%%" fill="white"/>\n%s\n</svg>\n'
                % (self.w, self.y + 20, self.w, self.y + 20, "\n".join(self.parts)))


LEFT, RIGHT = 250, 200  # label column, value column


def axis_ticks(lo, hi, log):
    if log:
        ticks, t = [], 10 ** math.floor(math.log10(lo))
        while t <= hi * 1.0001:
            if t >= lo * 0.9999:
                ticks.append(t)
            t *= 10
        return ticks
    step = 10 ** math.floor(math.log10(max(hi, 1e-9) / 4))
    for mult in (1, 2, 5, 10):
        if hi / (step * mult) <= 6:
            step *= mult
            break
    n = int(hi / step) + 1
    return [i * step for i in range(n + 1) if i * step <= hi * 1.0001]


def bar_panel(svg, title, subtitle, rows, log=False, fmt=fmt_g, unit_fmt=None, ratio=False):
    """rows: (label, [(value, lo, hi, color, name)]) ; bars left to right from 0 (or from lo if log)."""
    vals = [b[0] for _, bars in rows for b in bars if b[0] is not None]
    vals += [b[2] for _, bars in rows for b in bars if b[2] is not None]
    if not vals:
        return
    plot_w = svg.w - LEFT - RIGHT
    if log:
        lo = 10 ** math.floor(math.log10(max(min(v for v in vals if v > 0), 1e-9)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        pos = lambda v: (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * plot_w
    else:
        lo = 0.0
        hi = max(vals) * 1.1
        if ratio:
            hi = max(hi, 1.2)
        pos = lambda v: v / hi * plot_w
    svg.y += 28
    svg.text(10, svg.y, title, size=15, weight="bold")
    if subtitle:
        svg.y += 17
        svg.text(10, svg.y, subtitle, size=11, color="#555")
    svg.y += 12
    top = svg.y
    bar_h = 12
    for label, bars in rows:
        svg.text(LEFT - 8, svg.y + bar_h * len(bars) / 2 + 8, label, size=12, anchor="end")
        svg.y += 4
        for value, vlo, vhi, color, name in bars:
            if value is None:
                svg.text(LEFT + 4, svg.y + bar_h - 2, "%s: no data" % name, size=10, color="#888")
            else:
                svg.rect(LEFT, svg.y, pos(value), bar_h, color, "%s: %s" % (name, fmt(value)))
                if vlo is not None and vhi is not None and vhi > vlo:
                    yc = svg.y + bar_h / 2
                    svg.line(LEFT + pos(vlo), yc, LEFT + pos(vhi), yc, "#000", 1.2)
                    svg.line(LEFT + pos(vlo), yc - 4, LEFT + pos(vlo), yc + 4, "#000", 1.2)
                    svg.line(LEFT + pos(vhi), yc - 4, LEFT + pos(vhi), yc + 4, "#000", 1.2)
                svg.text(LEFT + plot_w + 8, svg.y + bar_h - 2, "%s %s" % (name, fmt(value)), size=10)
            svg.y += bar_h + 2
        svg.y += 8
    bottom = svg.y
    for t in axis_ticks(lo if log else 0.0, hi, log):
        x = LEFT + pos(t) if (not log or t > 0) else LEFT
        svg.line(x, top, x, bottom, "#ddd")
        svg.text(x, bottom + 13, (unit_fmt or fmt)(t), size=10, anchor="middle", color="#555")
    svg.line(LEFT, top, LEFT, bottom, "#444")
    if ratio:
        x = LEFT + pos(1.0)
        svg.line(x, top - 4, x, bottom + 4, "#d62728", 1.5, "5,3")
        svg.text(x + 4, bottom + 26, "parity (rabbitmq-c = 1)", size=10, color="#d62728")
        bottom += 14
    svg.y = bottom + 22


def spread(s):
    return (s["median"], s["min"], s["max"]) if s else (None, None, None)


def svg_chart(res):
    meta = res["meta"]
    svg = Svg(980)
    svg.y = 26
    svg.text(10, svg.y, "resilient-amqp (ours) vs rabbitmq-c — %s%s" % (
        meta.get("date", ""), ", QUICK MODE (not a measurement)" if meta.get("mode") == "quick" else ""),
        size=17, weight="bold")
    svg.y += 18
    mach = meta.get("machine", {})
    svg.text(10, svg.y, "%s × %s, %s GiB; median of %s run(s), whiskers = min..max; lapin %s, RabbitMQ %s, librabbitmq %s"
             % (mach.get("nproc", "?"), mach.get("cpu_model", "?"), mach.get("ram_gib", "?"), meta.get("runs", "?"),
                meta.get("versions", {}).get("lapin", "?"), meta.get("versions", {}).get("rabbitmq_server", "?"),
                meta.get("versions", {}).get("librabbitmq", "?")), size=11, color="#555")
    if meta.get("note"):
        svg.y += 15
        svg.text(10, svg.y, "Note: " + meta["note"], size=11, color="#b00")
    svg.y += 16
    svg.rect(10, svg.y, 12, 12, C_OURS)
    svg.text(28, svg.y + 11, "ours (resilient-amqp)", size=11)
    svg.rect(190, svg.y, 12, 12, C_THEIRS)
    svg.text(208, svg.y + 11, "rabbitmq-c", size=11)
    svg.rect(310, svg.y, 12, 12, C_RATIO)
    svg.text(328, svg.y + 11, "ratio ours / rabbitmq-c", size=11)
    svg.y += 10

    if res["throughput"]:
        rows = []
        for e in res["throughput"]:
            r = e["ratio_ours_over_rabbitmq_c"]
            p = r["pairs"]
            rows.append((e["short"], [(r["of_medians"], p["min"] if p else None, p["max"] if p else None,
                                       C_RATIO, "ratio")]))
        bar_panel(svg, "Throughput: ours / rabbitmq-c", "ratio of the medians (msg/s); > 1 means ours is faster; "
                  "whiskers: min..max of the per-pair ratios", rows, fmt=lambda x: "%.2f" % x, ratio=True)
        rows = []
        for e in res["throughput"]:
            rows.append((e["short"], [
                spread(e["msgs_per_s"]["ours"]) + (C_OURS, "ours"),
                spread(e["msgs_per_s"]["rabbitmq-c"]) + (C_THEIRS, "rabbitmq-c")]))
        bar_panel(svg, "Throughput (messages/s)", None, rows, fmt=lambda x: "{:,.0f}".format(x),
                  unit_fmt=lambda x: "%gk" % (x / 1000))
        rows = []
        for e in res["throughput"]:
            rows.append((e["short"], [
                spread(e["cpu_us_per_msg"]["ours"]) + (C_OURS, "ours"),
                spread(e["cpu_us_per_msg"]["rabbitmq-c"]) + (C_THEIRS, "rabbitmq-c")]))
        bar_panel(svg, "Client CPU per message (µs, user + system, whole process)", None, rows,
                  fmt=lambda x: "%.3g µs" % x, unit_fmt=lambda x: "%g" % x)

    if res["publish_call_latency"]:
        rows = []
        for e in res["publish_call_latency"]:
            for key, name in PCTS[:3]:
                p = e["percentiles_ns"][key]
                rows.append(("%s, %s" % (e["label"], name), [
                    spread(p["ours"]) + (C_OURS, "ours"), spread(p["rabbitmq-c"]) + (C_THEIRS, "rabbitmq-c")]))
        bar_panel(svg, "Publish call latency (log scale)", "ours: amqp_publish (buffer copy); "
                  "rabbitmq-c: amqp_basic_publish (socket write), for context", rows, log=True, fmt=fmt_ns)

    e = res["e2e_latency"]
    if e:
        rows = []
        for key, name in PCTS:
            p = e["percentiles_ns"][key]
            rows.append(("end-to-end %s" % name, [
                spread(p["ours"]) + (C_OURS, "ours"), spread(p["rabbitmq-c"]) + (C_THEIRS, "rabbitmq-c")]))
        bar_panel(svg, "End-to-end latency at %s msg/s (log scale)" % "{:,}".format(e["rate"]),
                  "publish → consumer callback, same process", rows, log=True, fmt=fmt_ns)

    m = res["memory"]
    if m:
        rows = [("%s × %s B buffered" % ("{:,}".format(m["n"]), m["size"]),
                 [spread(m["growth_mb"]) + (C_OURS, "ours")]),
                ("rabbitmq-c: N/A (no buffer)", [])]
        bar_panel(svg, "Memory with the broker down (MB)", None, rows, fmt=lambda x: "%.1f MB" % x,
                  unit_fmt=lambda x: "%g" % x)
    return svg.render()


# ---------------------------------------------------------------------------- main


def every_metric_md(lines):
    """Every case and metric with its pair noise (pairs.py): the rows the tables above leave out
    (streaming publish, many queues, e2e at 1k and 100 msg/s, context switches, broker CPU)."""
    sys.path.insert(0, HERE)
    import pairs  # noqa: E402 (bench/pairs.py, next to this file)
    out = ["", "## Every metric of every case, with its noise", "",
           "Medians per client; the ratio is ours / rabbitmq-c where more is better and rabbitmq-c / "
           "ours where less is better (CPU, latency, context switches, RSS, threads), so above 1 "
           "favours ours; pairs min - max is the spread of the per-run-pair ratios.", ""]
    return "\n".join(out + pairs.table(lines)) + "\n"


def cmd_report(args):
    lines = load(args.raw)
    res = aggregate(lines)
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.outdir, "results.md"), "w") as f:
        f.write(markdown(res))
        f.write("\n")
        f.write(every_metric_md(lines))
    with open(os.path.join(args.outdir, "results.svg"), "w") as f:
        f.write(svg_chart(res))
    return 0  # bench.sh decides the exit status


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("meta")
    m.add_argument("--mode", default="full")
    m.add_argument("--runs", type=int, default=3)
    m.add_argument("--n", type=int, default=0)
    m.add_argument("--n-4k", type=int, default=0)
    m.add_argument("--e2e-seconds", type=int, default=5)
    m.add_argument("--port", type=int, default=0)
    m.add_argument("--rmqc", default="")
    m.add_argument("--note", default="")
    sub.add_parser("meta-end")
    ln = sub.add_parser("line")
    ln.add_argument("json")
    r = sub.add_parser("report")
    r.add_argument("raw")
    r.add_argument("outdir")
    args = ap.parse_args()
    if args.cmd == "meta":
        cmd_meta(args)
    elif args.cmd == "meta-end":
        cmd_meta_end(args)
    elif args.cmd == "line":
        cmd_line(args)
    else:
        sys.exit(cmd_report(args))


if __name__ == "__main__":
    main()
