#!/usr/bin/env python3
"""pairs.py RAW.jsonl... -- medians, ratios and pair min-max noise for every case in
bench.sh raw files (the streaming publish rows, many_q*, e2e_1k/e2e_100, context switches,
broker CPU per message included); aggregate.py appends the same table to results.md.

For a metric M of a case: the median over runs of each client, the ratio of the medians
(ours / rabbitmq-c, or the inverse for "lower is better" metrics, so > 1 favours ours), and
the min - max of the per-run-pair ratios (run k of ours with run k of rabbitmq-c): the noise.
"""
import json
import statistics
import sys

HIGHER = ["msgs_per_s", "pub_msgs_per_s"]
LOWER = ["cpu_us_per_msg", "pub_cpu_us_per_msg", "broker_cpu_us_per_msg",
         "vol_ctx_switches_per_msg", "invol_ctx_switches_per_msg",
         "e2e_p50_ns", "e2e_p99_ns", "threads_consuming", "rss_kb", "rss_peak_kb"]


def table(lines):
    """The markdown table (a list of lines) for parsed raw lines (dicts)."""
    rows = {}
    for r in lines:
        if r.get("kind") not in ("run", "broker_cpu") or not r.get("test"):
            continue
        if r.get("kind") == "run" and (r.get("mode") in ("fill", "delete_many") or not r.get("ok")):
            continue
        d = rows.setdefault(r["test"], {}).setdefault(r.get("client"), {}).setdefault(r["run"], {})
        d.update({k: v for k, v in r.items() if isinstance(v, (int, float))})
    out = ["| case | metric | ours (median) | rabbitmq-c (median) | better-is-1+ ratio | pairs min - max | runs |",
           "|---|---|---|---|---|---|---|"]
    for test in sorted(rows):
        o, t = rows[test].get("ours", {}), rows[test].get("rabbitmq-c", {})
        for m in HIGHER + LOWER:
            ov = {k: v[m] for k, v in o.items() if m in v}
            tv = {k: v[m] for k, v in t.items() if m in v}
            if not ov or not tv:
                continue
            mo, mt = statistics.median(ov.values()), statistics.median(tv.values())
            hi = m in HIGHER

            def ratio(a, b):
                if a == 0 or b == 0:
                    return float("nan")
                return a / b if hi else b / a
            pairs = [ratio(ov[k], tv[k]) for k in ov if k in tv]
            out.append("| %s | %s | %.4g | %.4g | %.2f | %.2f - %.2f | %d |" % (
                test, m, mo, mt, ratio(mo, mt), min(pairs), max(pairs), len(pairs)))
    return out


def main(paths):
    lines = []
    for p in paths:
        for line in open(p):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    print("\n".join(table(lines)))


if __name__ == "__main__":
    main(sys.argv[1:])
