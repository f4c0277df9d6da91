#!/usr/bin/env python3
"""proc_cpu.py SECONDS DBURL [ORDERS]: CPU seconds of every process over
SECONDS, PostgreSQL backends grouped by application_name (the instance
suffixes -vm:PID... dropped), from /proc/<pid>/stat (utime + stime). With
ORDERS (orders completed in the window) it adds microseconds per order.
Used by bench/orders_cpu.sh; prints a table on stdout."""
import os
import subprocess
import sys
import time


def apps(url):
    out = subprocess.run(["psql", "-X", "-qAt", "-F|", url, "-c",
                          "SELECT pid, coalesce(nullif(application_name, ''), backend_type)"
                          " FROM pg_stat_activity"], capture_output=True, text=True).stdout
    m = {}
    for line in out.splitlines():
        pid, app = line.split("|", 1)
        for cut in ("-vm", "vm:"):
            if cut in app:
                app = app.split(cut)[0]
        m[int(pid)] = app.strip()
    return m


def snap():
    d = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            s = open("/proc/%s/stat" % p).read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        f = s[s.rindex(")") + 2:].split()
        d[int(p)] = (comm, int(f[11]) + int(f[12]))
    return d


def main():
    secs, url = float(sys.argv[1]), sys.argv[2]
    a = apps(url)
    s0, t0 = snap(), time.time()
    time.sleep(secs)
    s1, t1 = snap(), time.time()
    a.update(apps(url))
    hz = os.sysconf("SC_CLK_TCK")
    g = {}
    for p, (comm, t) in s1.items():
        dt = t - (s0[p][1] if p in s0 else 0)
        if dt <= 0:
            continue
        name = ("pg:" + a[p]) if p in a else comm
        g[name] = g.get(name, 0) + dt / hz
    tot = sum(g.values())
    per = None
    if len(sys.argv) > 3 and sys.argv[3]:
        per = float(sys.argv[3])
    for k, v in sorted(g.items(), key=lambda kv: -kv[1])[:16]:
        extra = "  %6.1f us/order" % (v * 1e6 / per) if per else ""
        print("%-36s %6.2f s %5.1f%%%s" % (k, v, 100 * v / tot, extra))
    extra = ", %.1f us/order" % (tot * 1e6 / per) if per else ""
    print("total %.2f s over %.1f s (%.2f cores)%s" % (tot, t1 - t0, tot / (t1 - t0), extra))


main()
