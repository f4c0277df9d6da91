#!/usr/bin/env python3
"""The relay's dashboard in a real browser, during a load run.

Starts outbox-relay (Redis sink; events of type Poison always fail, one
attempt, so they become dead letters) while a writer keeps committing events.
Headless Chromium opens the dashboard; through the DevTools protocol (a tiny
WebSocket client below, standard library only) the test waits for the topics,
the throughput chart, the lanes and the dead letters to show, clicks a
dead letter's Requeue button, and checks in the database that the event went
back into the outbox (it fails again, so it comes back as a dead letter with
one more error in its history). It keeps a screenshot (build/dashboard.png;
docs/dashboard.png with OUTBOX_UPDATE_DOCS=1).

Then the admin API's rules without a browser: on a non-loopback address an
action needs the bearer token (admin_token), or is refused when none is set;
a non-JSON body and a foreign Origin are refused; the token is never logged.

Usage: dashboard_test.py BIN_DIR SOURCE_DIR OUT_DIR. Exit 77 (skipped) without
test servers or Chromium.
"""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SKIP = 77
BIN, SRC, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
PG = os.environ.get("OUTBOX_TEST_PG")
REDIS = os.environ.get("OUTBOX_TEST_REDIS")
DB = "ops_dashboard"


def skip(why):
    print("SKIP: " + why)
    sys.exit(SKIP)


def fail(why):
    print("FAIL dashboard_requeue_click: " + why)
    sys.exit(1)


if not PG or not REDIS:
    skip("OUTBOX_TEST_PG / OUTBOX_TEST_REDIS not set (run through scripts/test.sh)")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
if not CHROMIUM:
    skip("no chromium (scripts/deps.sh installs the Debian package chromium)")


def psql(sql, db=DB):
    r = subprocess.run(["psql", f"{PG} dbname={db}", "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True)
    if r.returncode:
        fail(f"psql {sql!r}: {r.stderr}")
    return r.stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, fn, timeout=30.0, every=0.25):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = fn()
        if last:
            return last
        time.sleep(every)
    fail(f"timed out waiting for {what} (last: {last!r})")


class CDP:
    """Just enough of the Chrome DevTools protocol over a WebSocket (RFC 6455)."""

    def __init__(self, ws_url):
        rest = ws_url.split("://", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                fail("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            fail(f"DevTools handshake: {head!r}")
        self.next_id = 0

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                fail("DevTools connection closed")
            buf += chunk
        return buf

    def _send_frame(self, opcode, payload):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _recv_message(self):
        data = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b1 & 0x80 else None
            payload = self._recv_exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                fail("DevTools closed the WebSocket")
            data += payload
            if b0 & 0x80:
                return json.loads(data)

    def call(self, method, **params):
        self.next_id += 1
        self._send_frame(0x1, json.dumps({"id": self.next_id, "method": method,
                                          "params": params}).encode())
        while True:
            msg = self._recv_message()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    fail(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr, tolerate=False):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            if tolerate:
                return None
            fail(f"page script {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")


def start_relay(tmp, name, addr, extra=None):
    env = dict(os.environ, DATABASE_URL=f"{PG} dbname={DB}", OUTBOX_SINK=f"redis://{REDIS}",
               OUTBOX_METRICS_ADDR=addr, OUTBOX_FAULT_POISON_TYPE="Poison",
               OUTBOX_MAX_ATTEMPTS="1", OUTBOX_WORKERS="3", OUTBOX_RELAY_NAME=name,
               OUTBOX_LOG_FORMAT="text", OUTBOX_BACKOFF_BASE="100ms")
    env.update(extra or {})
    log = open(os.path.join(tmp, name + ".log"), "w")
    p = subprocess.Popen([os.path.join(BIN, "outbox-relay"), "--no-migrate"], env=env,
                         stdout=log, stderr=subprocess.STDOUT)
    return p, os.path.join(tmp, name + ".log")


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout) as e:
        return 0, str(e)


def main():
    tmp = tempfile.mkdtemp(prefix="outbox-dashboard-")
    procs = []
    stop = threading.Event()
    try:
        psql(f"DROP DATABASE IF EXISTS {DB}", db="postgres")
        psql(f"CREATE DATABASE {DB}", db="postgres")
        env = dict(os.environ, DATABASE_URL=f"{PG} dbname={DB}")
        subprocess.run([os.path.join(BIN, "outboxctl"), "migrate"], env=env, check=True,
                       capture_output=True)
        # Three poison events: they become dead letters at once.
        psql("INSERT INTO outbox (topic, type, key, payload) SELECT 'payments', 'Poison',"
             " 'bad-' || g, ('{\"n\":' || g || '}')::json FROM generate_series(1, 3) g")
        port = free_port()
        relay, relay_log = start_relay(tmp, "dash-relay", f"127.0.0.1:{port}")
        procs.append(relay)
        base = f"http://127.0.0.1:{port}"
        wait_for("the admin server", lambda: http("GET", base + "/healthz")[0] == 200)

        # The load: a writer committing batches of events on two topics.
        sent = [0]

        def writer():
            i = 0
            while not stop.is_set():
                i += 1
                psql("INSERT INTO outbox (topic, type, key, payload) SELECT"
                     " CASE WHEN g % 3 = 0 THEN 'payments' ELSE 'orders' END, 'OrderPlaced',"
                     f" 'order-' || (g % 40), ('{{\"batch\":{i},\"n\":' || g || '}}')::json"
                     " FROM generate_series(1, 40) g")
                sent[0] += 40
                time.sleep(0.15)

        threading.Thread(target=writer, daemon=True).start()
        wait_for("3 dead letters", lambda: psql(
            "SELECT count(*) FROM outbox_dead_letter WHERE type = 'Poison'") == "3")

        # The page in headless Chromium.
        profile = os.path.join(tmp, "chromium")
        chrome = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "chromium.log"), "w"))
        procs.append(chrome)
        active = os.path.join(profile, "DevToolsActivePort")
        wait_for("Chromium's DevTools port", lambda: os.path.exists(active) and
                 open(active).read().count("\n") >= 1, timeout=60)
        devport = open(active).read().split("\n")[0].strip()
        targets = wait_for("a page target", lambda: [t for t in json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{devport}/json/list").read())
            if t.get("type") == "page"])
        cdp = CDP(targets[0]["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                 deviceScaleFactor=1, mobile=False)
        cdp.call("Page.navigate", url=base + "/")
        wait_for("the dashboard to load", lambda: cdp.js(
            f"location.href === {json.dumps(base + '/')} && document.readyState === 'complete'"
            " && !!document.getElementById('live')", tolerate=True))

        wait_for("the page to load data", lambda: cdp.js(
            "document.getElementById('live').textContent") == "live")
        wait_for("both topics in the table", lambda: cdp.js(
            "[...document.querySelectorAll('#topics tbody td:first-child')]"
            ".map(td => td.textContent).sort().join(',')") in ("orders,payments",))
        wait_for("the lanes of this relay", lambda: cdp.js(
            "document.getElementById('lanes-sum').textContent") == "64 of 64 lanes held")
        wait_for("health: database and broker up", lambda: cdp.js(
            "document.getElementById('db').textContent + document.getElementById('broker')"
            ".textContent") == "upup")
        wait_for("a throughput chart with points", lambda: (cdp.js(
            "+document.getElementById('chart').dataset.points || 0") or 0) >= 8, timeout=60)
        wait_for("published events in the chart", lambda: float(cdp.js(
            "document.getElementById('rate').textContent") or 0) > 0, timeout=20)
        buttons = wait_for("3 requeue buttons", lambda: cdp.js(
            "[...document.querySelectorAll('#dlq button.requeue')].map(b => b.dataset.id)")
            if cdp.js("document.querySelectorAll('#dlq button.requeue').length") == 3 else None)
        target = buttons[0]
        before = psql(f"SELECT jsonb_array_length(errors) FROM outbox_dead_letter"
                      f" WHERE id = '{target}'")
        if before != "1":
            fail(f"dead letter {target}: {before} errors before the click, want 1")
        # Keep the picture before the click (three dead letters showing).
        shot = cdp.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 10000:
            fail("screenshot is not a PNG")
        with open(os.path.join(OUT, "dashboard.png"), "wb") as f:
            f.write(png)
        if os.environ.get("OUTBOX_UPDATE_DOCS") == "1":
            with open(os.path.join(SRC, "docs", "dashboard.png"), "wb") as f:
                f.write(png)

        # The click: the real button, through the page's own handler.
        cdp.js(f"document.querySelector('#dlq button.requeue[data-id=\"{target}\"]').click()")
        msg = wait_for("the page to confirm", lambda: cdp.js(
            "document.getElementById('msg').textContent") or None)
        if not msg.startswith("requeued 1 event"):
            fail(f"page says {msg!r}")
        # In the database: back in the outbox, published again, poisoned again:
        # a dead letter with a second error in its history.
        wait_for("the requeued event to fail again", lambda: psql(
            f"SELECT jsonb_array_length(errors) FROM outbox_dead_letter WHERE id = '{target}'")
            == "2")
        if "dlq_requeued" not in open(relay_log).read():
            fail("no dlq_requeued line in the relay's log")
        # A consumer dead letter (a group's handler rejected a message): the
        # consumer section lists it; its Requeue button marks it requeued (the
        # group's running consumers then hand it to their handler again).
        cid = psql("INSERT INTO outbox_consumer_dead_letter (group_name, message_id, topic, key,"
                   " type, body, attempts, reason, last_error, first_failed_at, last_failed_at)"
                   " VALUES ('inventory', '01a2297c-0000-7000-8000-00000000c0de', 'orders',"
                   " 'order-9', 'OrderCreated', convert_to('{\"bad\":true}', 'UTF8'), 1,"
                   " 'rejected', 'malformed order', now(), now()) RETURNING id")
        wait_for("the consumer dead letter on the page", lambda: cdp.js(
            "document.querySelectorAll('#consumer-dlq button.requeue-consumer').length") == 1)
        cdp.js(f"document.querySelector('#consumer-dlq button.requeue-consumer"
               f"[data-id=\"{cid}\"]').click()")
        wait_for("the consumer dead letter marked requeued", lambda: psql(
            f"SELECT requeued_at IS NOT NULL FROM outbox_consumer_dead_letter WHERE id = {cid}")
            == "t")
        msg = cdp.js("document.getElementById('msg').textContent") or ""
        if not msg.startswith(f"requeued 1 event(s) of {cid}"):
            fail(f"page says {msg!r} after the consumer requeue")
        if "consumer_dlq_requeued" not in open(relay_log).read():
            fail("no consumer_dlq_requeued line in the relay's log")
        print(f"dashboard: clicked Requeue on consumer dead letter {cid}: marked requeued")
        published = int(json.loads(http("GET", base + "/api/status")[1])["published_total"])
        print(f"dashboard: clicked Requeue on {target}: requeued, dead again with 2 errors; "
              f"{sent[0]} events written, {published} published during the run")

        # The alert rules only use metrics the relay exports.
        import re
        rules = open(os.path.join(SRC, "contrib", "prometheus", "outbox-rules.yml")).read()
        exported = http("GET", base + "/metrics")[1]
        used = sorted(set(re.findall(r"\b(outbox_[a-z_]+)\b", rules)))
        unknown = [m for m in used if m not in exported]
        if unknown or len(used) < 8:
            fail(f"outbox-rules.yml uses metrics the relay does not export: {unknown}")
        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "rules",
                                os.path.join(SRC, "contrib", "prometheus", "outbox-rules.yml")],
                               capture_output=True, text=True)
            if r.returncode:
                fail("promtool check rules: " + r.stdout + r.stderr)
        print(f"alert rules: the {len(used)} metrics they use are all exported")

        # The admin API's rules, without a browser.
        good = json.dumps({"id": buttons[1]}).encode()
        js = {"Content-Type": "application/json"}
        st, body = http("POST", base + "/api/dlq/requeue", good, {"Content-Type": "text/plain"})
        if st != 415:
            fail(f"text/plain body: {st} {body}")
        st, body = http("POST", base + "/api/dlq/requeue", good,
                        dict(js, Origin="http://evil.example"))
        if st != 403:
            fail(f"foreign Origin: {st} {body}")
        st, body = http("POST", base + "/api/dlq/requeue", b"{\"id\":\"nope\"}", js)
        if st != 400:
            fail(f"bad id: {st} {body}")

        token = "s3cret-admin-token"
        port2 = free_port()
        r2, log2 = start_relay(tmp, "dash-open", f"0.0.0.0:{port2}",
                               {"OUTBOX_ADMIN_TOKEN": token})
        procs.append(r2)
        b2 = f"http://127.0.0.1:{port2}"
        wait_for("the second admin server", lambda: http("GET", b2 + "/healthz")[0] == 200)
        st, body = http("POST", b2 + "/api/dlq/requeue", good, js)
        if st != 401:
            fail(f"non-loopback without token: {st} {body}")
        st, body = http("POST", b2 + "/api/dlq/requeue", good,
                        dict(js, Authorization="Bearer wrong"))
        if st != 401:
            fail(f"wrong token: {st} {body}")
        st, body = http("POST", b2 + "/api/dlq/requeue", good,
                        dict(js, Authorization="Bearer " + token))
        if st != 200 or json.loads(body).get("requeued") != 1:
            fail(f"right token: {st} {body}")
        port3 = free_port()
        r3, log3 = start_relay(tmp, "dash-notoken", f"0.0.0.0:{port3}")
        procs.append(r3)
        b3 = f"http://127.0.0.1:{port3}"
        wait_for("the third admin server", lambda: http("GET", b3 + "/healthz")[0] == 200)
        st, body = http("POST", b3 + "/api/dlq/requeue", good, js)
        if st != 403:
            fail(f"non-loopback, no admin_token: {st} {body}")
        status = json.loads(http("GET", b3 + "/api/status")[1])
        if status["requeue_enabled"]:
            fail("requeue shown as enabled without admin_token on 0.0.0.0")
        for lf in (relay_log, log2, log3):
            if token in open(lf).read():
                fail(f"admin_token in {lf}")
        print("admin API: token required off loopback, JSON only, same origin only")
        # The relays stop cleanly on SIGTERM (exit 0; under the sanitizers: no report).
        stop.set()
        for p in (relay, r2, r3):
            p.terminate()
        for p, lf in ((relay, relay_log), (r2, log2), (r3, log3)):
            rc = p.wait(timeout=30)
            text = open(lf).read()
            if rc != 0 or "Sanitizer" in text or "runtime error" in text:
                fail(f"relay exit {rc}, log {lf}:\n{text[-3000:]}")
        print("PASS dashboard_requeue_click")
        return 0
    finally:
        stop.set()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("OUTBOX_KEEP_TMP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
