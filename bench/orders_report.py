#!/usr/bin/env python3
"""Prints the Markdown section of bench/bench_orders.sh from its data directory.

Usage: python3 bench/orders_report.py DIR

DIR holds what bench_orders.sh wrote: meta.json, write_path.csv and, when the
lag run ran, lag_summary.tsv, lag_totals.json and lag.json. Every ratio is to a ceiling
measured in the same run.
"""
import csv
import json
import math
import os
import sys

NAMES = {
    "pgbench": "pgbench, the same transaction (ceiling)",
    "pgbench_bg": "pgbench, with relay + consumers running (`--no-api`)",
    "api_only": "POST /orders, API alone (`--no-relay --no-consumers`)",
    "api": "POST /orders, API + relay + consumers in one process",
}


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def write_path(d, meta):
    path = os.path.join(d, "write_path.csv")
    if not os.path.exists(path):
        return
    rows = list(csv.DictReader(open(path)))
    if not rows:
        return
    by = {r["run"]: r for r in rows}
    rate = lambda run: num(by[run]["orders_per_s"])
    ceil = rate("pgbench") if "pgbench" in by else None
    print(
        "Write path: %d connections for %d s per run, a new Idempotency-Key per order; the"
        " ceiling is `%s` (bench/orders_write.sql: the API's statements in the API's four round trips),"
        " measured in the same run, each run on emptied tables." % (
            meta["clients"], meta["secs"], meta["pgbench"]))
    print()
    print("| run | orders/s | vs ceiling | p50 / p95 / p99 / max latency (ms) | failed |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = "%.2f" % (num(r["orders_per_s"]) / ceil) if ceil else "-"
        print("| %s | %s | %s | %.1f / %.1f / %.1f / %.1f | %s |" % (
            NAMES.get(r["run"], r["run"]), "{:,.0f}".format(num(r["orders_per_s"])), ratio,
            num(r["p50_ms"]), num(r["p95_ms"]), num(r["p99_ms"]), num(r["max_ms"]), r["failed"]))
    if ceil and "api" in by:
        s = ("POST /orders with relay and consumers in the process reached %.2f of the pgbench"
             " ceiling (target 0.8) with p99 %.1f ms (target <= 50 ms)" % (
                 rate("api") / ceil, num(by["api"]["p99_ms"])))
        if "pgbench_bg" in by:
            s += ("; pgbench itself reaches %.2f while relay and consumers run, so like for like"
                  " the API gets %.2f of what the database allows" % (
                      rate("pgbench_bg") / ceil, rate("api") / rate("pgbench_bg")))
        if "api_only" in by:
            s += "; the API alone reaches %.2f" % (rate("api_only") / ceil)
        print()
        print(s + ".")


def lag(d, meta):
    path = os.path.join(d, "lag_summary.tsv")
    if not os.path.exists(path):
        return
    rows = {r["consumer"]: r for r in csv.DictReader(open(path), delimiter="\t")}
    j = json.load(open(os.path.join(d, "lag.json")))
    target = num(meta["lag_rate"])
    print()
    print(
        "Consumers under a steady load: POST /orders at %s orders/s for %d s (`outbox-load"
        " --rate`, %d connections), orders-service as shipped; lag = orders committed minus"
        " orders whose effect is recorded (the consumer's inbox records), sampled every"
        " second, then until drained." % (meta["lag_rate"], meta["lag_secs"], meta["clients"]))
    print()
    print("| consumer | effects/s during the load | max lag | lag when the load stopped"
          " | drained after | backlog growth, 2nd half | effects/s while draining |")
    print("|---|---|---|---|---|---|---|")

    def na(v, fmt):
        v = num(v)
        return "-" if math.isnan(v) else fmt % v

    for name in ("inventory", "email"):
        r = rows[name]
        drained = ("not within the wait" if math.isnan(num(r["drain_s"]))
                   else "%.1f s" % num(r["drain_s"]))
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            name, na(r["applied_per_s"], "%.0f"), r["max_lag"], r["lag_at_end"], drained,
            na(r["growth_per_s"], "%.1f /s"), na(r["drain_per_s"], "%.0f")))
    totals = json.load(open(os.path.join(d, "lag_totals.json")))
    print()
    print("Load achieved %.1f orders/s (%d ok, %d failed; p50 / p99 %.1f / %.1f ms; starts at"
          " most %.0f ms behind schedule); %s orders committed, %s `Email sent successfully`"
          " lines logged." % (j["rate"], j["ok"], j["failed"], j["latency_ms"]["p50"],
                              j["latency_ms"]["p99"], j["behind_schedule_ms"],
                              totals["committed"], totals["email_lines"]))

    def kept_up(r):  # the backlog grows by less than 1% of the rate, ends under 2 s of orders
        g = num(r["growth_per_s"])
        return (math.isnan(g) or g < 0.01 * target) and num(r["lag_at_end"]) <= 2 * target

    behind = [n for n in ("inventory", "email") if not kept_up(rows[n])]
    # The rate asked for and the one the service took: with its relay and
    # consumers busy, the API may take fewer orders than were offered.
    rate = "%s orders/s" % meta["lag_rate"]
    if j["rate"] < 0.97 * target:
        rate = "%s orders/s offered (%.0f taken)" % (meta["lag_rate"], j["rate"])
    print()
    if behind:
        print("At %s the %s consumer%s fell behind: the backlog grew during the load."
              % (rate, " and ".join(behind), "s" if len(behind) > 1 else ""))
    else:
        print("At %s both consumers kept up: no growing backlog." % rate)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: orders_report.py DIR")
    d = sys.argv[1]
    meta = json.load(open(os.path.join(d, "meta.json")))
    print("## The order system under load")
    print()
    print("Command: `%s` (%s, %d cores, load %s at the end; PostgreSQL %s)." % (
        meta["command"], meta["date"], meta["cores"], meta["load_end"],
        "durable" if meta["durable"] else "with fsync off"))
    print()
    write_path(d, meta)
    lag(d, meta)
    files = {"write_path.csv": "one line per run",
             "api_persec.csv": "the api run's latency per second",
             "lag.csv": "t_s, committed, inventory/email done and lag, unpublished events",
             "lag_load_persec.csv": "the steady load's latency per second"}
    have = ["`%s` (%s)" % (f, what) for f, what in files.items()
            if os.path.exists(os.path.join(d, f))]
    print()
    print("Data for plots in `%s`: %s." % (d, ", ".join(have)))


if __name__ == "__main__":
    main()
