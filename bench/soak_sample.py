#!/usr/bin/env python3
"""The soak's sampler (bench/soak.sh starts it): every INTERVAL seconds, until
killed, appends one sample to three files in OUT:

  samples.tsv  one line per sample: the order system's progress and backlog
               (orders, pending, emails, consumer lag in orders, outbox rows,
               dead letters, idempotency keys, inbox records, Redis stream
               length and memory, consumer-group pending/lag, HTTP answers and
               non-2xx so far, the load generator's counts, database and WAL size,
               the machine's load average and CPU/IO pressure)
  rss.tsv      one line per sample and process group: processes, VmRSS, RssAnon,
               RssShmem, Pss (kB). Groups: orders-service, redis-server,
               postmaster, PostgreSQL client backends by role (pg:api, pg:relay,
               pg:inventory, pg:email, from application_name), pg-aux (checkpointer,
               walwriter, autovacuum, ...), outbox-load; shm:postgresql is the
               shared memory PostgreSQL touched (the largest RssShmem of its processes)
  tables.tsv   one line per sample and user table: pg_total_relation_size,
               heap size, live and dead tuples (pg_stat_user_tables)

Times are Unix epochs (the report puts them relative to the soak's start)."""
import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--interval", type=float, default=10)
ap.add_argument("--db", required=True)
ap.add_argument("--redis-port", required=True)
ap.add_argument("--svc-pid", type=int, required=True)
ap.add_argument("--svc-out", required=True)
ap.add_argument("--pgdata", required=True)
ap.add_argument("--metrics", required=True)
ap.add_argument("--phase-file", required=True)
ap.add_argument("--load-pid-file", required=True)
ap.add_argument("--load-err", required=True)
a = ap.parse_args()

SAMPLE_COLS = ["epoch", "phase", "orders", "pending", "rejected", "emails", "inventory_lag",
               "email_lag", "outbox_rows", "outbox_dead_letters", "consumer_dead_letters",
               "idempotency_keys", "inbox_rows", "stream_len", "redis_used_memory",
               "redis_used_memory_rss", "inventory_group_pending", "inventory_group_lag",
               "email_group_pending", "email_group_lag", "http_answers", "http_non2xx",
               "orders_201", "load_done", "load_ok", "load_failed", "db_bytes", "wal_bytes",
               "loadavg1", "cpu_some_avg10", "io_some_avg10"]


def psql(query):
    r = subprocess.run(["psql", "-X", "-qAt", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                        a.db, "-c", query], capture_output=True, text=True, timeout=60)
    if r.returncode:
        raise RuntimeError(r.stderr.strip())
    return [l.split("\t") for l in r.stdout.splitlines() if l]


def redis(*args):
    r = subprocess.run(["redis-cli", "-p", a.redis_port, *args], capture_output=True, text=True,
                       timeout=30)
    return r.stdout


def proc_mem(pid):
    """(VmRSS, RssAnon, RssShmem, Pss) in kB, or None when the process is gone."""
    v = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, rest = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssShmem"):
                    v[k] = int(rest.split()[0])
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    v["Pss"] = int(line.split()[1])
    except (OSError, ValueError):
        return None
    return (v.get("VmRSS", 0), v.get("RssAnon", 0), v.get("RssShmem", 0), v.get("Pss", 0))


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        if int(st[st.rindex(")") + 2:].split()[1]) == ppid:
            out.append(int(d))
    return out


def postmaster_pid():
    with open(os.path.join(a.pgdata, "postmaster.pid")) as f:
        return int(f.readline())


def redis_pid():
    m = re.search(r"process_id:(\d+)", redis("INFO", "server"))
    return int(m.group(1)) if m else None


class Tail:
    """Counts lines with a pattern in a growing file, reading only what is new."""

    def __init__(self, path, pattern):
        self.path, self.pattern, self.pos, self.rest, self.count = path, pattern, 0, b"", 0

    def update(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except OSError:
            return self.count
        self.pos += len(chunk)
        data = self.rest + chunk
        lines = data.split(b"\n")
        self.rest = lines.pop()
        self.count += sum(1 for l in lines if self.pattern in l)
        return self.count


def http_counts():
    """(answers, non-2xx, POST /orders 201) from the service's /metrics."""
    try:
        text = urllib.request.urlopen(a.metrics, timeout=10).read().decode()
    except Exception:
        return ("", "", "")
    total = non2xx = created = 0
    for line in text.splitlines():
        if not line.startswith("outbox_http_requests_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        n = int(float(value))
        status = re.search(r'status="(\d+)"', labels).group(1)
        total += n
        if not status.startswith("2"):
            non2xx += n
        if 'route="/orders"' in labels and 'method="POST"' in labels and status == "201":
            created += n
    return (total, non2xx, created)


def load_progress():
    """(done, ok, failed) from outbox-load's last progress line."""
    try:
        with open(a.load_err, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ("", "", "")
    m = None
    for m in re.finditer(r"(\d+) done, (\d+) ok, (\d+) failed", tail):
        pass
    return m.groups() if m else ("", "", "")


def machine():
    """The machine's pressure: 1-minute load average, and the share of the last
    10 s some task waited for CPU / for I/O (PSI, /proc/pressure)."""
    out = []
    try:
        out.append(open("/proc/loadavg").read().split()[0])
    except OSError:
        out.append("")
    for res in ("cpu", "io"):
        try:
            line = open("/proc/pressure/" + res).readline()
            out.append(re.search(r"avg10=([\d.]+)", line).group(1))
        except (OSError, AttributeError):
            out.append("")
    return out


def read_phase():
    try:
        with open(a.phase_file) as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def load_pid():
    try:
        with open(a.load_pid_file) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def group_name(app, backend_type):
    """PostgreSQL processes by role: the service's sessions by what they serve
    (application_name: "orders-service api", "outbox-relay <host>:<pid> worker-1",
    "inventory-<host>-<pid>-1", "outbox-consumer email", ...), the rest pg-aux."""
    if backend_type != "client backend":
        return "pg-aux"
    if app == "soak-sampler":
        return "pg:sampler"
    for role in ("api", "relay", "inventory", "email"):
        if role in app:
            return "pg:" + role
    return "pg:other"


os.environ["PGAPPNAME"] = "soak-sampler"
emails = Tail(a.svc_out, b"Email sent successfully")
pm = postmaster_pid()
rp = redis_pid()
files = {}
for name, header in (("samples", SAMPLE_COLS),
                     ("rss", ["epoch", "phase", "group", "processes", "rss_kb", "anon_kb",
                              "shmem_kb", "pss_kb"]),
                     ("tables", ["epoch", "phase", "table", "total_bytes", "heap_bytes", "live",
                                 "dead"])):
    path = os.path.join(a.out, name + ".tsv")
    files[name] = open(path, "w")
    files[name].write("\t".join(header) + "\n")

STATE_SQL = """SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM orders WHERE status = 'pending'),
  (SELECT count(*) FROM orders WHERE status = 'rejected'), (SELECT count(*) FROM outbox),
  (SELECT count(*) FROM outbox_dead_letter), (SELECT count(*) FROM outbox_consumer_dead_letter),
  (SELECT count(*) FROM outbox_http_idempotency), (SELECT count(*) FROM outbox_inbox),
  pg_database_size(current_database()), (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())"""
TABLES_SQL = """SELECT relname, pg_total_relation_size(relid), pg_relation_size(relid),
  n_live_tup, n_dead_tup FROM pg_stat_user_tables ORDER BY relname"""
PROCS_SQL = "SELECT pid, coalesce(application_name, ''), backend_type FROM pg_stat_activity"

next_t = time.time()
while True:
    now = time.time()
    if now < next_t:
        time.sleep(next_t - now)
    next_t += a.interval
    epoch = "%.1f" % time.time()
    phase = read_phase()
    try:
        # processes first: the sampler's own queries come after
        groups = {}

        def add(group, pid):
            m = proc_mem(pid)
            if m is None:
                return
            g = groups.setdefault(group, [0, 0, 0, 0, 0])
            g[0] += 1
            for i in range(4):
                g[i + 1] += m[i]

        add("orders-service", a.svc_pid)
        if rp:
            add("redis-server", rp)
        add("postmaster", pm)
        kinds = {int(r[0]): (r[1], r[2]) for r in psql(PROCS_SQL)}
        shm_max = proc_mem(pm)[2] if proc_mem(pm) else 0
        for pid in children(pm):
            app, bt = kinds.get(pid, ("", "pg-aux"))
            add(group_name(app, bt), pid)
            m = proc_mem(pid)
            if m and m[2] > shm_max:
                shm_max = m[2]
        # the shared memory PostgreSQL has touched (shared buffers and the rest):
        # the most any one process maps, bounded by shared_buffers and co
        groups["shm:postgresql"] = [1, 0, 0, shm_max, 0]
        lp = load_pid()
        if lp:
            add("outbox-load", lp)
        for g in sorted(groups):
            files["rss"].write("\t".join([epoch, phase, g] + [str(x) for x in groups[g]]) + "\n")

        em = emails.update()  # before the orders: an email follows its order's commit
        s = psql(STATE_SQL)[0]
        orders, pending, rejected, outbox_rows, dead, cdead, idem, inbox, dbb, walb = s
        for r in psql(TABLES_SQL):
            files["tables"].write("\t".join([epoch, phase] + r) + "\n")
        mem = dict(l.split(":", 1) for l in redis("INFO", "memory").splitlines() if ":" in l)
        xlen = redis("XLEN", "orders").strip()
        lines = redis("XINFO", "GROUPS", "orders").splitlines()
        gp = {}
        name = None
        for k, v in zip(lines[0::2], lines[1::2]):  # raw output: key, value, key, value ...
            if k == "name":
                name = v
            elif name and k in ("pending", "lag"):
                gp[(name, k)] = v
        http = http_counts()
        lprog = load_progress()
        row = [epoch, phase, orders, pending, rejected, str(em),
               str(int(pending)), str(int(orders) - em), outbox_rows, dead, cdead, idem, inbox,
               xlen, mem.get("used_memory", "").strip(), mem.get("used_memory_rss", "").strip(),
               gp.get(("inventory", "pending"), ""), gp.get(("inventory", "lag"), ""),
               gp.get(("email", "pending"), ""), gp.get(("email", "lag"), ""),
               *[str(x) for x in http], *lprog, dbb, walb, *machine()]
        files["samples"].write("\t".join(row) + "\n")
    except Exception as e:  # one bad sample must not end the soak's record
        print("sample at %s failed: %s" % (epoch, e), file=sys.stderr)
    for f in files.values():
        f.flush()
