#!/usr/bin/env python3
"""Chaos soak for rampart: two HA nodes with a VIP, DNS-discovered backend pods,
a real PostgreSQL primary/replica, mixed client load, faults from a seeded schedule,
and assertions on failures, stale routing, memory, fds, tasks and false failovers.

    python3 bench/soak.py --duration 600 --seed 1 [--report bench/SOAK-REPORT.md]

See bench/SOAK.md. Needs root (network namespaces), iproute2, dnsmasq, PostgreSQL
(Debian packages) and the h2 package (Debian's python3-h2). Traffic stays inside
network namespaces this script creates (192.0.2.0/24) and removes again.
"""

import argparse
import atexit
import base64
import ctypes
import hashlib
import heapq
import http.client
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

# bench/h2.py (a benchmark script) sits beside this file: keep it from shadowing the
# h2 package
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _here]
sys.modules.pop("h2", None)
try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
except ImportError:  # a python without Debian's dist-packages (python3-h2) on its path
    sys.modules.pop("h2", None)
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
    except ImportError:
        h2 = None

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

VIP = "192.0.2.100"
WEB_PORT = 8080
PG_PORT = 5432
DNS_IP = "192.0.2.53"
POD_PORT = 8000
# pods 1..6 are found by DNS (app.soak), s7 and s8 are static servers of the pool
PODS = {f"p{i}": f"192.0.2.{20 + i}" for i in range(1, 7)}
PODS.update({"s7": "192.0.2.27", "s8": "192.0.2.28"})
STATIC = ["s7", "s8"]
DNS_SETS = [("p1", "p2", "p3"), ("p3", "p4", "p5"), ("p2", "p5", "p6"), ("p1", "p4", "p6")]
PG_PRIMARY_IP, PG_REPLICA_IP = "192.0.2.30", "192.0.2.31"
NODES = {"a": ("192.0.2.1", 150), "b": ("192.0.2.2", 100)}
CLIENT_IP = "192.0.2.10"
BE_IP = "192.0.2.20"

# health check timing of the web pool (used to know when a restored pod is back)
HC_INTERVAL, HC_RISE = 0.5, 2
POD_RECOVERY = HC_INTERVAL * HC_RISE + 1.0
DNS_TTL, DNS_GRACE = 1.0, 2.0  # assertion 2: removed members take no request after TTL + grace
ADVERT = 0.25
FD_TOLERANCE = 4
TASK_TOLERANCE = 2
RSS_TOLERANCE = 0.10
CLIENT_RETRY_WINDOW = 10.0  # a client retries an idempotent request for this long

T0 = time.time()


def now():
    return time.time() - T0


def log(msg):
    print(f"[{now():8.2f}] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# network namespaces
# --------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def setns(name):
    """Moves the calling thread (only) into network namespace `name`."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {name}: {os.strerror(e)}")
    finally:
        os.close(fd)


class NsExec:
    """A thread living in a namespace that runs callables for other threads."""

    def __init__(self, ns):
        self.ns = ns
        self.q = queue.Queue()
        self.lock = threading.Lock()
        t = threading.Thread(target=self._run, daemon=True, name=f"ns-{ns}")
        t.start()

    def _run(self):
        setns(self.ns)
        while True:
            fn, args, box, ev = self.q.get()
            if fn is None:
                return
            try:
                box.append((True, fn(*args)))
            except BaseException as e:  # handed back to the caller
                box.append((False, e))
            ev.set()

    def call(self, fn, *args, timeout=30):
        box, ev = [], threading.Event()
        self.q.put((fn, args, box, ev))
        if not ev.wait(timeout):
            raise TimeoutError(f"call in {self.ns} timed out")
        ok, v = box[0]
        if ok:
            return v
        raise v


def run(args, check=True, timeout=180, ns=None, env=None):
    cmd = list(args)
    if ns:
        cmd = ["ip", "netns", "exec", ns] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()} {r.stdout.strip()}")
    return r


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_stale_namespaces():
    """Deletes namespaces left by an earlier soak run (prefix soak<pid>-, pid gone)."""
    out = run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^soak(\d+)-", name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        log(f"removing leftover namespace {name}")
        kill_ns_pids(name)
        run(["ip", "netns", "del", name], check=False)


def kill_ns_pids(name):
    out = run(["ip", "netns", "pids", name], check=False).stdout
    for p in out.split():
        try:
            os.kill(int(p), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


# --------------------------------------------------------------------------------------
# small HTTP helpers (blocking, run in the caller's namespace)
# --------------------------------------------------------------------------------------


def http_req(host, port, method, path, body=None, headers=None, timeout=3.0):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        h = {"Host": "soak"}
        h.update(headers or {})
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def admin(node_exec, method, path, body=None, timeout=3.0):
    return node_exec.call(http_req, "127.0.0.1", 8404, method, path, body, None, timeout,
                          timeout=timeout + 5)


def wait_for(what, cond, within, poll=0.05):
    """Polls `cond` until it returns a truthy value; raises after `within` seconds."""
    deadline = time.time() + within
    last_err = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # not ready yet
            last_err = e
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what} (last error: {last_err})")
        time.sleep(poll)  # polling interval


# --------------------------------------------------------------------------------------
# WebSocket framing (hand-rolled, RFC 6455 subset: unfragmented frames)
# --------------------------------------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_write(w, op, payload, mask):
    head = bytes([0x80 | op])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        mk = os.urandom(4)
        payload = bytes(b ^ mk[i % 4] for i, b in enumerate(payload))
        head += mk
    w(head + payload)


def read_exact(r, n):
    buf = b""
    while len(buf) < n:
        chunk = r(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def ws_read(r):
    h = read_exact(r, 2)
    if h is None:
        return None
    op = h[0] & 0x0F
    masked = h[1] & 0x80
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(r, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(r, 8))[0]
    mk = read_exact(r, 4) if masked else None
    payload = read_exact(r, n) if n else b""
    if payload is None:
        return None
    if mk:
        payload = bytes(b ^ mk[i % 4] for i, b in enumerate(payload))
    return op, payload


# --------------------------------------------------------------------------------------
# the backend pod (runs as its own process: `soak.py pod NAME ADDR PORT DIR`)
# --------------------------------------------------------------------------------------


def run_pod(name, addr, port, d):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    mode_file = os.path.join(d, "ctl", name)
    keys_dir = os.path.join(d, "keys")
    viol_file = os.path.join(d, "violations.log")

    def mode():
        try:
            with open(mode_file) as f:
                return f.read().strip() or "ok"
        except FileNotFoundError:
            return "ok"

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send(self, code, text, extra=()):
            b = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(b)))
            self.send_header("X-Pod", name)
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(b)

        def hang(self):
            t0 = time.time()
            while mode() == "hang" and time.time() - t0 < 60:
                time.sleep(0.1)  # pacing: a hung pod waits until it is released
            self.close_connection = True

        def do_GET(self):
            if self.headers.get("Upgrade", "").lower() == "websocket":
                return self.websocket()
            m = mode()
            if m == "500":
                return self.send(500, f"pod={name} fault=500\n")
            if m == "hang":
                return self.hang()
            if self.path.startswith("/slow/"):  # used by bench/soak/preempt_repro.py
                time.sleep(int(self.path.split("/")[2]) / 1000)  # pacing: a slow answer
            self.send(200, f"pod={name} path={self.path}\n")

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            if len(body) != n:
                self.close_connection = True
                return
            sha = hashlib.sha256(body).hexdigest()
            key = self.headers.get("Idempotency-Key")
            m = mode()
            if m == "500":
                return self.send(500, f"pod={name} fault=500\n")
            replay = 0
            if key:
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
                path = os.path.join(keys_dir, safe)
                tmp = f"{path}.{name}.{threading.get_ident()}.tmp"
                with open(tmp, "w") as f:
                    f.write(f"{sha} {name} {time.time():.3f}\n")
                try:
                    os.link(tmp, path)  # atomic: the first body for a key wins
                except FileExistsError:
                    with open(path) as f:
                        prev = f.read().split()
                    if prev and prev[0] != sha:
                        with open(viol_file, "a") as f:
                            f.write(f"{time.time():.3f} key={key} pod={name} first={prev[0]} now={sha}\n")
                        os.unlink(tmp)
                        return self.send(409, f"pod={name} key={key} body differs\n")
                    replay = 1
                os.unlink(tmp)
            if m == "hang":
                # processed, but the answer never comes (a client retry must replay)
                return self.hang()
            self.send(200, f"pod={name} sha={sha} replay={replay}\n")

        def websocket(self):
            key = self.headers.get("Sec-WebSocket-Key", "")
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", ws_accept(key))
            self.send_header("X-Pod", name)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            r = self.rfile.read
            w = self.wfile.write
            while True:
                fr = ws_read(r)
                if fr is None:
                    return
                op, payload = fr
                if op == 8:
                    ws_write(w, 8, payload[:2], False)
                    return
                if op == 9:
                    ws_write(w, 10, payload, False)
                elif op in (1, 2):
                    ws_write(w, op, payload, False)

    class S(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 256

    srv = S((addr, port), H)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    srv.serve_forever()


# --------------------------------------------------------------------------------------
# PostgreSQL: a minimal protocol client (startup, one simple query, terminate)
# --------------------------------------------------------------------------------------


class PgError(Exception):
    pass


def pg_session(host, port, timeout, stage):
    """Returns (in_recovery, server_addr). `stage[0]` tells how far it got."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.settimeout(timeout)
        f = s.makefile("rb")
        params = b"user\0postgres\0database\0postgres\0application_name\0soak\0\0"
        s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)

        def msg():
            h = f.read(5)
            if len(h) < 5:
                raise ConnectionError("connection closed")
            n = struct.unpack("!i", h[1:])[0]
            return h[:1], f.read(n - 4)

        while True:
            t, b = msg()
            if t == b"R" and struct.unpack("!i", b[:4])[0] != 0:
                raise PgError("authentication requested")
            if t == b"E":
                raise PgError(b.decode("utf-8", "replace").replace("\0", " ").strip())
            if t == b"Z":
                break
        stage[0] = "query"
        q = b"SELECT pg_is_in_recovery()::text, inet_server_addr()::text\0"
        s.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
        row = None
        while True:
            t, b = msg()
            if t == b"E":
                raise PgError(b.decode("utf-8", "replace").replace("\0", " ").strip())
            if t == b"D":
                ncol = struct.unpack("!h", b[:2])[0]
                pos, vals = 2, []
                for _ in range(ncol):
                    ln = struct.unpack("!i", b[pos:pos + 4])[0]
                    pos += 4
                    vals.append(b[pos:pos + ln].decode() if ln >= 0 else None)
                    pos += max(ln, 0)
                row = vals
            if t == b"Z":
                break
        s.sendall(b"X" + struct.pack("!i", 4))
        if not row:
            raise PgError("no row")
        return row[0], row[1]
    finally:
        s.close()


# --------------------------------------------------------------------------------------
# the lab
# --------------------------------------------------------------------------------------


def pg_bin():
    best = None
    for v in os.listdir("/usr/lib/postgresql"):
        p = f"/usr/lib/postgresql/{v}/bin"
        if os.path.exists(f"{p}/initdb") and (best is None or int(v) > int(best[0])):
            best = (v, p)
    if not best:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return best[1]


class Proc:
    """A rampart process and its lifetime."""

    def __init__(self, node, popen, started):
        self.node = node
        self.popen = popen
        self.pid = popen.pid
        self.started = started
        self.ready_at = None
        self.killed_at = None
        self.baseline_fd = None
        self.baseline_tasks = None
        self.baseline_fds = []
        self.end_fds = []
        self.warm_rss = None
        self.warm_at = None
        self.warm_measured_at = None
        self.end_rss = None
        self.samples = []  # (t, rss_kb, fds)


class Lab:
    def __init__(self, args):
        self.args = args
        self.prefix = f"soak{os.getpid()}"
        self.dir = f"/tmp/{self.prefix}"
        self.ns = {}
        self.exec = {}
        self.pods = {}  # name -> Popen
        self.procs = {"a": None, "b": None}
        self.all_procs = []
        self.others = []  # dnsmasq etc.
        self.pg = pg_bin()
        self.pg_started = []
        self.cleaned = False
        self.cfg_variant = {"a": 0, "b": 0}
        self.lock = threading.RLock()

    # ---- setup -------------------------------------------------------------------
    def setup(self):
        remove_stale_namespaces()
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        for sub in ("ctl", "keys", "logs"):
            os.makedirs(f"{self.dir}/{sub}", exist_ok=True)
        open(f"{self.dir}/violations.log", "w").close()
        sw = self.add_ns("sw")
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        hosts = {
            "a": [NODES["a"][0]],
            "b": [NODES["b"][0]],
            "c": [CLIENT_IP],
            "be": [BE_IP, DNS_IP, PG_PRIMARY_IP, PG_REPLICA_IP] + list(PODS.values()),
        }
        for role, addrs in hosts.items():
            ns = self.add_ns(role)
            port = f"p{role}"
            run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
                 "netns", sw])
            run(["ip", "-n", sw, "link", "set", port, "master", "br0", "up"])
            for a in addrs:
                run(["ip", "-n", ns, "addr", "add", f"{a}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        for role in ("a", "b", "c", "be"):
            self.exec[role] = NsExec(self.ns[role])
        log(f"namespaces up: {' '.join(self.ns.values())}")
        self.start_dns()
        for name in PODS:
            self.start_pod(name)
        for name in PODS:
            self.wait_pod(name)
        log("pods up")
        self.start_pg()
        self.write_keys_and_notify()
        for n in ("a", "b"):
            self.write_config(n)
        for n in ("a", "b"):
            self.start_node(n)
        for n in ("a", "b"):
            self.wait_node_ready(n)
        wait_for("node a MASTER and b BACKUP",
                 lambda: self.ha_state("a") == "MASTER" and self.ha_state("b") == "BACKUP", 20)
        for n in ("a", "b"):
            wait_for(f"node {n}: web pool fully up and pg primary up",
                     lambda: self.eligible(n, "web") == 5 and self.eligible(n, "pg") == 1, 30)
        log("rampart nodes up: a MASTER, b BACKUP; pools healthy")

    def add_ns(self, role):
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        self.ns[role] = name
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    # ---- DNS -----------------------------------------------------------------------
    def start_dns(self):
        self.dns_set = 0
        self.write_hosts(DNS_SETS[0])
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns["be"], "dnsmasq", "--keep-in-foreground", "--no-resolv",
             "--no-hosts", "--bind-interfaces", f"--listen-address={DNS_IP}", "--port=53",
             "--local-ttl=1", "--user=root", "--conf-file=/dev/null", "--log-facility=-",
             f"--addn-hosts={self.dir}/hosts", f"--pid-file={self.dir}/dnsmasq.pid"],
            stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/logs/dnsmasq.log", "w"))
        self.dnsmasq = p
        self.others.append(p)

        def answers():
            s = socket.create_connection((DNS_IP, 53), timeout=0.5)  # TCP port open
            s.close()
            return True

        self.exec["c"].call(wait_for, "dnsmasq", answers, 10, timeout=15)

    def write_hosts(self, members):
        tmp = f"{self.dir}/hosts.tmp"
        with open(tmp, "w") as f:
            for m in members:
                f.write(f"{PODS[m]} app.soak\n")
        os.replace(tmp, f"{self.dir}/hosts")

    # ---- pods ----------------------------------------------------------------------
    def set_mode(self, pod, mode):
        tmp = f"{self.dir}/ctl/{pod}.tmp"
        with open(tmp, "w") as f:
            f.write(mode)
        os.replace(tmp, f"{self.dir}/ctl/{pod}")

    def start_pod(self, name):
        self.set_mode(name, "ok")
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns["be"], sys.executable, os.path.abspath(__file__), "pod",
             name, PODS[name], str(POD_PORT), self.dir],
            stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/logs/pod-{name}.log", "a"))
        self.pods[name] = p

    def wait_pod(self, name):
        def up():
            st, body = http_req(PODS[name], POD_PORT, "GET", "/health", timeout=1)
            return st == 200
        self.exec["c"].call(wait_for, f"pod {name}", up, 15, timeout=20)

    def kill_pod(self, name):
        p = self.pods[name]
        os.kill(p.pid, signal.SIGKILL)
        p.wait()

    # ---- postgres ------------------------------------------------------------------
    def pg_cmd(self, tool, *args, ns=True):
        return run(["runuser", "-u", "postgres", "--", f"{self.pg}/{tool}", *args],
                   ns=self.ns["be"] if ns else None)

    def start_pg(self):
        d = f"{self.dir}/pg"
        os.makedirs(d, exist_ok=True)
        for s in ("psock", "rsock"):
            os.makedirs(f"{d}/{s}", exist_ok=True)
        run(["chown", "-R", "postgres:postgres", d])
        self.pg_cmd("initdb", "-D", f"{d}/primary", "-U", "postgres", "--auth=trust", "--no-sync",
                    "-E", "UTF8", ns=False)
        with open(f"{d}/primary/postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '{PG_PRIMARY_IP}'\nport = {PG_PORT}\n"
                    f"unix_socket_directories = '{d}/psock'\nwal_level = replica\n"
                    "max_wal_senders = 4\nhot_standby = on\nfsync = off\nmax_connections = 200\n")
        with open(f"{d}/primary/pg_hba.conf", "a") as f:
            f.write("host all all 192.0.2.0/24 trust\nhost replication all 192.0.2.0/24 trust\n")
        self.pg_cmd("pg_ctl", "-D", f"{d}/primary", "-l", f"{d}/primary.log", "-w", "start")
        self.pg_started.append(f"{d}/primary")
        self.pg_cmd("pg_basebackup", "-h", PG_PRIMARY_IP, "-p", str(PG_PORT), "-U", "postgres",
                    "-D", f"{d}/replica", "-R", "-X", "stream")
        with open(f"{d}/replica/postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '{PG_REPLICA_IP}'\nunix_socket_directories = '{d}/rsock'\n")
        self.pg_cmd("pg_ctl", "-D", f"{d}/replica", "-l", f"{d}/replica.log", "-w", "start")
        self.pg_started.append(f"{d}/replica")
        log("postgres primary 192.0.2.30 and streaming replica 192.0.2.31 up")

    # ---- rampart -------------------------------------------------------------------
    def write_keys_and_notify(self):
        with open(f"{self.dir}/ha.key", "w") as f:
            f.write(base64.b64encode(os.urandom(48)).decode())
        with open(f"{self.dir}/notify.sh", "w") as f:
            f.write(f"#!/bin/sh\necho \"$(date +%s.%N) $*\" >> {self.dir}/ha-events.log\n")
        os.chmod(f"{self.dir}/notify.sh", 0o755)

    def config_text(self, node, variant):
        me, prio = NODES[node]
        peer = NODES["b" if node == "a" else "a"][0]
        # the alternating configs differ in the web pool's balance, s8's weight, and a
        # spare pool that exists in one variant only
        balance = "round_robin" if variant % 2 == 0 else "least_conn"
        s8_weight = 1 if variant % 2 == 0 else 2
        spare = "" if variant % 2 == 0 else (
            '\n[[pool]]\nname = "spare"\n  [[pool.server]]\n  address = "192.0.2.29:8000"\n')
        pg_health = ('  [pool.health]\n  kind = "postgres"\n  user = "postgres"\n  database = "postgres"\n'
                     '  role = "primary"\n  interval = "500ms"\n  timeout = "400ms"\n  rise = 1\n  fall = 2\n')
        return f"""# generated by bench/soak.py (variant {variant % 2})
[global]
threads = 1
access_log = "off"
shutdown_grace = "2s"
state_file = "{self.dir}/state-{node}.json"
[admin]
bind = "127.0.0.1:8404"
[resolver]
nameservers = ["{DNS_IP}:53"]
timeout = "500ms"
min_ttl = "1s"
[[listener]]
name = "web"
bind = ["{VIP}:{WEB_PORT}"]
mode = "http"
pool = "web"
[[listener]]
name = "pg"
bind = ["{VIP}:{PG_PORT}"]
mode = "tcp"
pool = "pg"
[[pool]]
name = "web"
balance = "{balance}"
connect_timeout = "500ms"
server_timeout = "2s"
keepalive_timeout = "5s"
retries = {self.args.pool_retries if hasattr(self.args, "pool_retries") else 2}
retry_on = ["connect_failure", "reset", "timeout", "500", "502", "503", "504"]
retry_budget_percent = 50
  [pool.health]
  kind = "http"
  path = "/health"
  interval = "{int(HC_INTERVAL * 1000)}ms"
  timeout = "300ms"
  rise = {HC_RISE}
  fall = 2
  [[pool.server]]
  address = "app.soak:{POD_PORT}"
  [[pool.server]]
  name = "s7"
  address = "{PODS['s7']}:{POD_PORT}"
  [[pool.server]]
  name = "s8"
  address = "{PODS['s8']}:{POD_PORT}"
  weight = {s8_weight}
[[pool]]
name = "pg"
connect_timeout = "1s"
{pg_health}  [[pool.server]]
  address = "{PG_PRIMARY_IP}:{PG_PORT}"
  [[pool.server]]
  address = "{PG_REPLICA_IP}:{PG_PORT}"
{spare}
[ha]
interface = "eth0"
vips = ["{VIP}/24"]
node_id = "node-{node}"
priority = {prio}
bind = "{me}:5405"
peers = ["{peer}:5405"]
advert_interval = "{int(ADVERT * 1000)}ms"
preempt = true
preempt_delay = "2s"
auth_key_file = "{self.dir}/ha.key"
track = ["pool:web"]
notify = "{self.dir}/notify.sh"
"""

    def write_config(self, node):
        path = f"{self.dir}/{node}.toml"
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config_text(node, self.cfg_variant[node]))
        os.replace(tmp, path)
        return path

    def start_node(self, node):
        env = dict(os.environ, RAMPART_LOG="info")
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[node], self.rampart, "run", "-c", f"{self.dir}/{node}.toml"],
            stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/logs/rampart-{node}.log", "a"), env=env)
        proc = Proc(node, p, now())
        with self.lock:
            self.procs[node] = proc
            self.all_procs.append(proc)
        return proc

    def wait_node_ready(self, node, within=30):
        proc = self.procs[node]

        def ready():
            if proc.popen.poll() is not None:
                raise RuntimeError(f"rampart {node} exited with {proc.popen.returncode}")
            st, _ = admin(self.exec[node], "GET", "/ready", timeout=1)
            return st == 200
        wait_for(f"node {node} ready", ready, within)
        proc.ready_at = now()

    def stats(self, node):
        st, body = admin(self.exec[node], "GET", "/stats;json", timeout=2)
        return json.loads(body) if st == 200 else None

    def ha_state(self, node):
        s = self.stats(node)
        return ((s or {}).get("ha") or {}).get("state", "?")

    def pool(self, node, name):
        st, body = admin(self.exec[node], "GET", f"/api/pools/{name}", timeout=2)
        return json.loads(body) if st == 200 else None

    def eligible(self, node, name):
        p = self.pool(node, name)
        return p["eligible"] if p else -1

    def generation(self, node):
        st, body = admin(self.exec[node], "GET", "/api/reload", timeout=2)
        return json.loads(body)["generation"]

    def metrics(self, node):
        st, body = admin(self.exec[node], "GET", "/metrics", timeout=3)
        return body if st == 200 else ""

    def alive_tasks(self, node):
        """Sum of rampart_runtime_alive_tasks over runtimes, or None when absent."""
        total, seen = 0, False
        for line in self.metrics(node).splitlines():
            if line.startswith("rampart_runtime_alive_tasks"):
                seen = True
                total += int(float(line.rsplit(" ", 1)[1]))
        return total if seen else None

    # ---- teardown ------------------------------------------------------------------
    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        for proc in self.all_procs:
            if proc.popen.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.popen.wait(5)
                except Exception:
                    pass
        for d in self.pg_started:
            if os.path.exists(f"{d}/postmaster.pid"):
                try:
                    run(["runuser", "-u", "postgres", "--", f"{self.pg}/pg_ctl", "-D", d, "-m",
                         "immediate", "stop"], check=False, timeout=30)
                except Exception:
                    pass
        for p in list(self.pods.values()) + self.others:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(5)
                except Exception:
                    pass
        for ns in self.ns.values():
            kill_ns_pids(ns)
            run(["ip", "netns", "del", ns], check=False)
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        log("cleaned up (namespaces removed)")


# --------------------------------------------------------------------------------------
# client load (threads inside the client namespace)
# --------------------------------------------------------------------------------------

IDEMPOTENT = ["get_keepalive", "get_newconn", "post_key", "h2_get", "pg"]
KINDS = IDEMPOTENT + ["post_nokey", "ws"]
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, EOFError)


class H2Client:
    def __init__(self, host, port, timeout=8.0):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.c = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.c.initiate_connection()
        self.s.sendall(self.c.data_to_send())
        self.dead = False

    def get(self, path):
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "soak"),
                                  (":path", path)], end_stream=True)
        self.s.sendall(self.c.data_to_send())
        status, hdrs, body, done, goaway = None, {}, b"", False, None
        while not done:
            data = self.s.recv(65536)
            if not data:
                raise ConnectionError("h2 connection closed")
            for ev in self.c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    hdrs = dict(ev.headers)
                    status = int(hdrs[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if ev.stream_id == sid:
                        body += ev.data
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise ConnectionError(f"h2 stream reset code={ev.error_code}")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.dead = True
                    goaway = f"h2 GOAWAY code={ev.error_code} last={ev.last_stream_id}"
            out = self.c.data_to_send()
            if out:
                self.s.sendall(out)
            if goaway and not done:
                raise ConnectionError(goaway)
        return status, hdrs, body

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class Load:
    def __init__(self, lab, seed):
        self.lab = lab
        self.seed = seed
        self.recs = []  # one dict per logical request / session
        self.stop = threading.Event()
        self.threads = []
        self.errors = []

    def record(self, kind, t0, ts, ok, attempts=1, pod=None, status=None, err=None, reasons=(),
               **extra):
        r = dict(kind=kind, t0=t0, ts=ts, t1=now(), ok=ok, attempts=attempts, pod=pod,
                 status=status, err=err, reasons=list(reasons))
        r.update(extra)
        self.recs.append(r)

    def start(self):
        specs = [
            (self.w_get, "ka1", True, 0.05), (self.w_get, "ka2", True, 0.05),
            (self.w_get, "nc1", False, 0.1),
            (self.w_post, "pk1", True, 0.1), (self.w_post, "pn1", False, 0.2),
            (self.w_ws, "ws1", 0.2), (self.w_pg, "pg1", 0.3),
        ]
        if h2 is not None:
            specs.append((self.w_h2, "h21", 0.1))
        for spec in specs:
            t = threading.Thread(target=self._wrap, args=spec, daemon=True, name=spec[1])
            t.start()
            self.threads.append(t)

    def _wrap(self, fn, *args):
        setns(self.lab.ns["c"])
        try:
            fn(*args)
        except Exception:
            self.errors.append(traceback.format_exc())
            log(f"load worker {args[0]} crashed:\n{traceback.format_exc()}")

    def join(self, within=30):
        self.stop.set()
        deadline = time.time() + within
        for t in self.threads:
            t.join(max(0.1, deadline - time.time()))

    # -- HTTP/1.1 GET, keep-alive or a new connection per request; retried by the client
    #    on transport errors only (a 5xx is a failure)
    def w_get(self, name, keepalive, pace):
        kind = "get_keepalive" if keepalive else "get_newconn"
        conn, n = None, 0
        while not self.stop.is_set():
            n += 1
            t0, attempts, reasons = now(), 0, []
            while True:
                attempts += 1
                ts = now()
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(VIP, WEB_PORT, timeout=8)
                    hdr = {"Host": "soak"}
                    if not keepalive:
                        hdr["Connection"] = "close"
                    conn.request("GET", f"/get/{name}/{n}", headers=hdr)
                    r = conn.getresponse()
                    body = r.read()
                    pod = r.getheader("X-Pod")
                    if not keepalive or r.will_close:
                        conn.close()
                        conn = None
                    ok = r.status == 200 and pod is not None and body.startswith(f"pod={pod} ".encode())
                    self.record(kind, t0, ts, ok, attempts, pod, r.status,
                                None if ok else body[:120].decode("utf-8", "replace"), reasons)
                    break
                except TRANSPORT_ERRORS as e:
                    if conn is not None:
                        conn.close()
                        conn = None
                    reasons.append((round(ts, 2), type(e).__name__))
                    if now() - t0 > CLIENT_RETRY_WINDOW:
                        self.record(kind, t0, ts, False, attempts, None, None, repr(e), reasons)
                        break
                    time.sleep(0.05)  # pacing: client retry backoff
            time.sleep(pace)  # pacing
        if conn is not None:
            conn.close()

    # -- POST with a body: keyed (idempotent: retried with the same key on transport errors
    #    and 5xx) or not (one attempt, reported only)
    def w_post(self, name, keyed, pace):
        kind = "post_key" if keyed else "post_nokey"
        rng = random.Random(f"{self.seed}-{name}")
        conn, n = None, 0
        while not self.stop.is_set():
            n += 1
            key = f"k{self.seed}-{name}-{n}"
            body = f"{key}:".encode() + rng.randbytes(rng.randint(64, 20000))
            sha = hashlib.sha256(body).hexdigest()
            t0, attempts, reasons = now(), 0, []
            while True:
                attempts += 1
                ts = now()
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(VIP, WEB_PORT, timeout=8)
                    hdr = {"Host": "soak", "Content-Type": "application/octet-stream"}
                    if keyed:
                        hdr["Idempotency-Key"] = key
                    conn.request("POST", f"/post/{name}/{n}", body=body, headers=hdr)
                    r = conn.getresponse()
                    rbody = r.read().decode("utf-8", "replace")
                    pod = r.getheader("X-Pod")
                    if r.will_close:
                        conn.close()
                        conn = None
                    if r.status == 200:
                        ok = f"sha={sha}" in rbody
                        self.record(kind, t0, ts, ok, attempts, pod, 200,
                                    None if ok else f"body checksum mismatch: {rbody[:120]}", reasons,
                                    key=key if keyed else None, sha=sha,
                                    replay="replay=1" in rbody)
                        break
                    if keyed and r.status >= 500 and now() - t0 <= CLIENT_RETRY_WINDOW:
                        reasons.append((round(ts, 2), f"HTTP {r.status}"))
                        time.sleep(0.05)  # pacing: client retry backoff
                        continue
                    self.record(kind, t0, ts, False, attempts, pod, r.status, rbody[:120], reasons,
                                key=key if keyed else None, sha=sha)
                    break
                except TRANSPORT_ERRORS as e:
                    if conn is not None:
                        conn.close()
                        conn = None
                    reasons.append((round(ts, 2), type(e).__name__))
                    if not keyed or now() - t0 > CLIENT_RETRY_WINDOW:
                        self.record(kind, t0, ts, False, attempts, None, None, repr(e), reasons,
                                    key=key if keyed else None, sha=sha)
                        break
                    time.sleep(0.05)  # pacing: client retry backoff
            time.sleep(pace)  # pacing
        if conn is not None:
            conn.close()

    # -- h2c (prior knowledge) GETs on a kept connection; retried on transport errors/GOAWAY
    def w_h2(self, name, pace):
        conn, n = None, 0
        while not self.stop.is_set():
            n += 1
            t0, attempts, reasons = now(), 0, []
            while True:
                attempts += 1
                ts = now()
                try:
                    if conn is None:
                        conn = H2Client(VIP, WEB_PORT)
                    status, hdrs, body = conn.get(f"/h2/{name}/{n}")
                    pod = hdrs.get("x-pod")
                    ok = status == 200 and pod is not None
                    self.record("h2_get", t0, ts, ok, attempts, pod, status,
                                None if ok else body[:120].decode("utf-8", "replace"), reasons)
                    if conn.dead:
                        conn.close()
                        conn = None
                    break
                except (TRANSPORT_ERRORS + (h2.exceptions.ProtocolError,)) as e:
                    if conn is not None:
                        conn.close()
                        conn = None
                    reasons.append((round(ts, 2), f"{type(e).__name__}: {e}"[:80]))
                    if now() - t0 > CLIENT_RETRY_WINDOW:
                        self.record("h2_get", t0, ts, False, attempts, None, None, repr(e), reasons)
                        break
                    time.sleep(0.05)  # pacing: client retry backoff
            if n % 300 == 0 and conn is not None:  # a fresh connection now and then
                conn.close()
                conn = None
            time.sleep(pace)  # pacing
        if conn is not None:
            conn.close()

    # -- WebSocket sessions: the handshake is retried on transport errors; 10 echoes each
    def w_ws(self, name, pace):
        rng = random.Random(f"{self.seed}-{name}")
        n = 0
        while not self.stop.is_set():
            n += 1
            t0, attempts, reasons = now(), 0, []
            s = None
            while True:
                attempts += 1
                ts = now()
                stage, pod, echoes = "handshake", None, 0
                try:
                    s = socket.create_connection((VIP, WEB_PORT), timeout=8)
                    key = base64.b64encode(os.urandom(16)).decode()
                    s.sendall((f"GET /ws/{name}/{n} HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
                    f = s.makefile("rb")
                    status = f.readline().decode("latin-1")
                    if not status:
                        raise ConnectionError("closed before the handshake answer")
                    hdrs = {}
                    while True:
                        line = f.readline().decode("latin-1").strip()
                        if not line:
                            break
                        k, _, v = line.partition(":")
                        hdrs[k.strip().lower()] = v.strip()
                    pod = hdrs.get("x-pod")
                    if " 101 " not in status or hdrs.get("sec-websocket-accept") != ws_accept(key):
                        self.record("ws", t0, ts, False, attempts, pod, status.split()[1] if len(status.split()) > 1 else None,
                                    f"handshake: {status.strip()}", reasons, stage=stage)
                        break
                    stage = "echo"
                    for i in range(10):
                        payload = f"{name}-{n}-{i}-".encode() + rng.randbytes(rng.randint(1, 3000))
                        ws_write(s.sendall, 2, payload, True)
                        fr = ws_read(f.read)
                        if fr is None:
                            raise ConnectionError(f"closed after {echoes} echoes")
                        if fr[1] != payload:
                            raise ValueError("echo differs")
                        echoes += 1
                        time.sleep(0.03)  # pacing between messages
                    ws_write(s.sendall, 8, struct.pack("!H", 1000), True)
                    fr = ws_read(f.read)
                    self.record("ws", t0, ts, fr is not None and fr[0] == 8, attempts, pod, 101,
                                None if fr and fr[0] == 8 else "no close frame", reasons, stage="close",
                                echoes=echoes)
                    break
                except (TRANSPORT_ERRORS + (ValueError,)) as e:
                    reasons.append((round(ts, 2), type(e).__name__))
                    if stage == "handshake" and now() - t0 <= CLIENT_RETRY_WINDOW:
                        time.sleep(0.05)  # pacing: client retry backoff
                        continue
                    self.record("ws", t0, ts, False, attempts, pod, None, repr(e), reasons, stage=stage,
                                echoes=echoes)
                    break
                finally:
                    if s is not None:
                        s.close()
                        s = None
            time.sleep(pace)  # pacing

    # -- PostgreSQL sessions through the tcp listener (role = primary); a read-only
    #    query, retried on transport errors like a connection pool would
    def w_pg(self, name, pace):
        while not self.stop.is_set():
            t0, attempts, reasons = now(), 0, []
            while True:
                attempts += 1
                ts = now()
                stage = ["connect"]
                try:
                    rec, addr = pg_session(VIP, PG_PORT, 5, stage)
                    ok = rec == "false"
                    self.record("pg", t0, ts, ok, attempts, addr, None,
                                None if ok else f"answered by a server in recovery ({addr})", reasons)
                    break
                except (TRANSPORT_ERRORS + (PgError,)) as e:
                    reasons.append((round(ts, 2), f"{stage[0]}: {type(e).__name__}"))
                    if now() - t0 > CLIENT_RETRY_WINDOW:
                        self.record("pg", t0, ts, False, attempts, None, None, f"{stage[0]}: {e!r}", reasons)
                        break
                    time.sleep(0.1)  # pacing: client retry backoff
            time.sleep(pace)  # pacing


# --------------------------------------------------------------------------------------
# monitors: CPU and per-process RSS / fds
# --------------------------------------------------------------------------------------


def read_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def count_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def describe_fds(pid):
    """What each fd of a process is: sockets resolved through its namespace's /proc/net."""
    def addr(h):
        ip, port = h.split(":")
        if len(ip) == 8:
            ip = ".".join(str(b) for b in reversed(bytes.fromhex(ip)))
        return f"{ip}:{int(port, 16)}"
    socks = {}
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{proto}") as f:
                next(f)
                for line in f:
                    c = line.split()
                    state = TCP_STATES.get(c[3], c[3]) if proto.startswith("tcp") else ""
                    local = addr(c[1])
                    if state != "LISTEN" and not c[2].startswith("00000000:0000"):
                        local = local.rsplit(":", 1)[0] + ":*"  # ephemeral port
                    socks[c[9]] = f"{proto} {local}->{addr(c[2])} {state}".strip()
        except (FileNotFoundError, StopIteration, ValueError):
            pass
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            target = socks.get(m.group(1), target)
        out.append(target)
    return out


class Monitor:
    def __init__(self, lab, warmup):
        self.lab = lab
        self.warmup = warmup
        self.cpu = []  # (t, load1, busy_percent)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True, name="monitor")

    def cpu_at(self, t):
        best = None
        for s in self.cpu:
            if best is None or abs(s[0] - t) < abs(best[0] - t):
                best = s
        return best

    def run(self):
        prev = None
        i = 0
        while not self.stop.is_set():
            try:
                with open("/proc/stat") as f:
                    vals = [int(x) for x in f.readline().split()[1:]]
                idle = vals[3] + vals[4]
                total = sum(vals[:8])
                with open("/proc/loadavg") as f:
                    load1 = float(f.read().split()[0])
                if prev:
                    dt = total - prev[1]
                    busy = 100.0 * (1 - (idle - prev[0]) / dt) if dt else 0.0
                    self.cpu.append((now(), load1, round(busy, 1)))
                prev = (idle, total)
                if i % 2 == 0:
                    for p in list(self.lab.all_procs):
                        if p.popen.poll() is not None or p.ready_at is None:
                            continue
                        try:
                            rss, fds = read_rss_kb(p.pid), count_fds(p.pid)
                        except (FileNotFoundError, ProcessLookupError):
                            continue
                        t = now()
                        p.samples.append((round(t, 1), rss, fds))
                        if p.warm_rss is None and p.warm_at is not None and t >= p.warm_at:
                            p.warm_rss = rss
                            p.warm_measured_at = t
            except Exception as e:
                log(f"monitor: {e!r}")
            i += 1
            time.sleep(0.5)  # pacing: sampling interval


# --------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------


class Chaos:
    """Faults from a seeded schedule. Every action and its detail goes to the timeline."""

    def __init__(self, lab, load, seed, duration, t_start):
        self.lab = lab
        self.load = load
        self.rng = random.Random(seed)
        self.duration = duration
        self.t_start = t_start  # soak time at which load started
        self.timeline = []  # (t, fault, detail)
        self.anomalies = []  # things that should not happen (harness sanity checks)
        self.heap = []
        self.seq = 0
        self.stop = threading.Event()
        self.pod_fault = {p: None for p in PODS}
        self.pod_recover_until = {p: 0.0 for p in PODS}
        self.pod_down_intervals = []  # [pod, t_from, t_to]: not able to serve
        self.open_down = {}
        self.dns_history = [(0.0, tuple(DNS_SETS[0]))]  # (t, members) of app.soak
        self.removed = []  # [pod, t_from, t_to, why]: must not answer requests sent in there
        self.drained = None
        self.node_down = None
        self.vip_faults = []  # dicts
        self.restarts = []  # (t_start, t_settled, node)
        self.promotion_rec = None
        self.reload_count = 0
        self.pg_windows = []  # (t_from, t_to): every server of the pg pool was down
        self.thread = threading.Thread(target=self.run, daemon=True, name="chaos")
        self.build_schedule()

    def note(self, fault, detail, t=None):
        t = now() if t is None else t
        self.timeline.append((t, fault, detail))
        log(f"FAULT {fault}: {detail}")

    def push(self, t, action, arg=None, restore=False):
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, action, arg, restore))

    def build_schedule(self):
        d = self.duration
        t0 = self.t_start
        first = max(5.0, 0.1 * d)
        last = d - max(10.0, 0.12 * d)
        kinds = [("pod_kill", 3), ("pod_500", 2), ("pod_hang", 2), ("dns_flip", 3), ("reload", 2),
                 ("drain", 2)]
        names = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        t = first
        while True:
            t += self.rng.uniform(2.5, 6.0)
            if t >= last:
                break
            kind = self.rng.choices(names, weights)[0]
            self.push(t0 + t, kind, self.rng.random())
        nvip = max(1, round(d / 200))
        vip_times = []
        for i in range(nvip):
            frac = 0.3 + (0.45 * i / max(1, nvip - 1) if nvip > 1 else 0.0)
            tv = d * frac + self.rng.uniform(-0.03, 0.03) * d
            vip_times.append(tv)
            self.push(t0 + tv, "vip_kill", self.rng.random())
        tp = d * 0.55 + self.rng.uniform(-0.03, 0.03) * d
        while any(abs(tp - tv) < 15 for tv in vip_times):
            tp += 5
        if tp < last:
            self.push(t0 + tp, "promotion", self.rng.random())

    def run(self):
        while self.heap:
            t, _, action, arg, restore = self.heap[0]
            if self.stop.is_set():
                if not restore:
                    heapq.heappop(self.heap)
                    continue
            else:
                while now() < t and not self.stop.is_set():
                    time.sleep(min(0.1, max(0.0, t - now())))  # pacing: the fault schedule
                if self.stop.is_set() and not restore:
                    continue
            heapq.heappop(self.heap)
            try:
                getattr(self, action)(arg)
            except Exception as e:
                if self.lab.cleaned:  # interrupted: the lab is being torn down
                    return
                self.anomalies.append(f"{now():.1f}s {action}: {e!r}")
                log(f"fault {action} raised: {traceback.format_exc()}")

    # -- pod state bookkeeping
    def faulted(self, p):
        return self.pod_fault[p] is not None or now() < self.pod_recover_until[p]

    def pod_goes_down(self, p, how):
        self.pod_fault[p] = how
        self.open_down[p] = now()

    def pod_comes_back(self, p):
        self.pod_fault[p] = None
        self.pod_recover_until[p] = now() + POD_RECOVERY
        self.pod_down_intervals.append([p, self.open_down.pop(p), now() + POD_RECOVERY])

    def pick_pod(self, r):
        if sum(1 for p in PODS if self.faulted(p)) >= 2:
            return None
        members = set(DNS_SETS[self.dns_idx()]) | set(STATIC)
        cands = sorted(p for p in members if not self.faulted(p))
        return r.choice(cands) if cands else None

    def dns_idx(self):
        return DNS_SETS.index(self.dns_history[-1][1])

    # -- the faults
    def pod_kill(self, x):
        r = random.Random(x)
        p = self.pick_pod(r)
        if p is None:
            return self.note("pod_kill", "skipped: two pods already faulted")
        self.lab.kill_pod(p)
        self.pod_goes_down(p, "killed")
        delay = r.uniform(2, 6)
        self.note("pod_kill", f"kill -9 {p} ({PODS[p]}), restart in {delay:.1f}s")
        self.push(now() + delay, "pod_restart", p, restore=True)

    def pod_restart(self, p):
        self.lab.start_pod(p)
        self.lab.wait_pod(p)
        self.pod_comes_back(p)
        self.note("pod_restart", f"{p} restarted and answering")

    def pod_mode(self, x, mode):
        r = random.Random(x)
        p = self.pick_pod(r)
        if p is None:
            return self.note(f"pod_{mode}", "skipped: two pods already faulted")
        self.lab.set_mode(p, mode)
        self.pod_goes_down(p, mode)
        delay = r.uniform(3, 8)
        self.note(f"pod_{mode}", f"{p} ({PODS[p]}) now {'returns 500' if mode == '500' else 'hangs'}, "
                                 f"restored in {delay:.1f}s")
        self.push(now() + delay, "pod_heal", p, restore=True)

    def pod_500(self, x):
        self.pod_mode(x, "500")

    def pod_hang(self, x):
        self.pod_mode(x, "hang")

    def pod_heal(self, p):
        self.lab.set_mode(p, "ok")
        self.pod_comes_back(p)
        self.note("pod_heal", f"{p} answers normally again")

    def dns_flip(self, x):
        r = random.Random(x)
        cur = self.dns_idx()
        new = r.choice([i for i in range(len(DNS_SETS)) if i != cur])
        old_m, new_m = set(DNS_SETS[cur]), set(DNS_SETS[new])
        self.lab.write_hosts(DNS_SETS[new])
        os.kill(self.lab.dnsmasq.pid, signal.SIGHUP)
        t = now()
        self.dns_history.append((t, tuple(DNS_SETS[new])))
        for p in sorted(old_m - new_m):
            self.removed.append([p, t + DNS_TTL + DNS_GRACE, None, f"DNS flip at {t:.1f}s"])
        for p in sorted(new_m - old_m):
            for rm in self.removed:
                if rm[0] == p and rm[2] is None and rm[3].startswith("DNS"):
                    rm[2] = t
        self.note("dns_flip", f"app.soak: {'/'.join(sorted(old_m))} -> {'/'.join(sorted(new_m))} "
                              f"(removed {'/'.join(sorted(old_m - new_m))}; dnsmasq SIGHUP)")

    def alive_nodes(self):
        return [n for n in ("a", "b") if self.node_down != n]

    def reload(self, x):
        self.reload_count += 1
        how = "SIGHUP" if self.reload_count % 2 else "POST /api/reload"
        details = []
        for n in ("a", "b"):
            self.lab.cfg_variant[n] += 1
            self.lab.write_config(n)
        for n in self.alive_nodes():
            proc = self.lab.procs[n]
            g0 = self.lab.generation(n)
            t = time.time()
            if how == "SIGHUP":
                os.kill(proc.pid, signal.SIGHUP)
            else:
                st, body = admin(self.lab.exec[n], "POST", "/api/reload", timeout=5)
                if st != 200:
                    self.anomalies.append(f"{now():.1f}s reload of {n} refused: {st} {body[:200]}")
            try:
                g1 = wait_for(f"node {n} generation > {g0}",
                              lambda: (lambda g: g if g > g0 else None)(self.lab.generation(n)), 10)
                details.append(f"{n}: gen {g0}->{g1} in {1000 * (time.time() - t):.0f}ms")
            except TimeoutError as e:
                self.anomalies.append(f"{now():.1f}s reload of {n} by {how} not applied: {e}")
                details.append(f"{n}: NOT applied")
        self.note("reload", f"{how}, config variant {self.lab.cfg_variant['a'] % 2}: {'; '.join(details)}")

    def drain(self, x):
        r = random.Random(x)
        if self.drained or self.node_down:
            return self.note("drain", "skipped: a drain is active or a node is down")
        s = r.choice(STATIC)
        for n in ("a", "b"):
            st, body = admin(self.lab.exec[n], "POST", f"/api/pools/web/servers/{s}", {"state": "drain"})
            if st != 200:
                self.anomalies.append(f"{now():.1f}s drain {s} on {n}: {st} {body[:200]}")
        t_ack = now()
        self.drained = s
        self.removed.append([s, t_ack, None, f"admin drain acknowledged at {t_ack:.1f}s"])
        delay = r.uniform(3, 8)
        self.note("drain", f"{s} drained on both nodes (acknowledged), undrain in {delay:.1f}s")
        self.push(now() + delay, "undrain", s, restore=True)

    def undrain(self, s):
        t = now()
        for rm in self.removed:
            if rm[0] == s and rm[2] is None and rm[3].startswith("admin"):
                rm[2] = t
        for n in self.alive_nodes():
            st, body = admin(self.lab.exec[n], "POST", f"/api/pools/web/servers/{s}", {"state": "ready"})
            if st != 200:
                self.anomalies.append(f"{now():.1f}s undrain {s} on {n}: {st} {body[:200]}")
        self.drained = None
        self.note("undrain", f"{s} ready again on both nodes")

    def vip_kill(self, x, tries=0):
        r = random.Random(x)
        if (self.drained or self.node_down) and not self.stop.is_set():
            if tries < 30:
                return self.push(now() + 1.0, "vip_kill_retry", (x, tries + 1))
            return self.note("vip_kill", "skipped: a drain or a node restart never ended")
        if self.stop.is_set():
            return
        states = {n: self.lab.ha_state(n) for n in ("a", "b")}
        masters = [n for n, s in states.items() if s == "MASTER"]
        if len(masters) != 1:
            self.anomalies.append(f"{now():.1f}s before the VIP fault: states {states}")
            return self.note("vip_kill", f"skipped: states {states}")
        m = masters[0]
        peer = "b" if m == "a" else "a"
        proc = self.lab.procs[m]
        os.kill(proc.pid, signal.SIGKILL)
        t_kill = now()
        proc.killed_at = t_kill
        self.node_down = m
        proc.popen.wait()
        rec = dict(t_kill=t_kill, node=m, peer=peer, t_takeover=None, t_restart=None, t_settled=None)
        self.vip_faults.append(rec)
        try:
            wait_for(f"node {peer} MASTER", lambda: self.lab.ha_state(peer) == "MASTER", 10, poll=0.02)
            rec["t_takeover"] = now()
        except TimeoutError as e:
            self.anomalies.append(f"{now():.1f}s VIP takeover by {peer}: {e}")
        delay = r.uniform(8, 14)
        took = f"{rec['t_takeover'] - t_kill:.2f}s" if rec["t_takeover"] else "never"
        self.note("vip_kill", f"kill -9 master {m} (pid {proc.pid}); {peer} MASTER after {took}; "
                              f"restart in {delay:.1f}s", t=t_kill)
        self.push(now() + delay, "vip_restart", rec, restore=True)

    def vip_kill_retry(self, arg):
        self.vip_kill(arg[0], arg[1])

    def vip_restart(self, rec):
        n = rec["node"]
        rec["t_restart"] = now()
        proc = self.lab.start_node(n)
        self.lab.wait_node_ready(n)
        proc.baseline_fd = count_fds(proc.pid)
        proc.baseline_fds = describe_fds(proc.pid)
        proc.baseline_tasks = self.lab.alive_tasks(n)
        proc.warm_at = proc.ready_at + self.load_warmup()
        detail = f"node {n} restarted (pid {proc.pid}), ready"
        # node a has the higher priority and preempt = true: it takes the VIP back
        if n == "a":
            try:
                wait_for("node a MASTER again (preempt)", lambda: self.lab.ha_state("a") == "MASTER"
                         and self.lab.ha_state("b") == "BACKUP", 20, poll=0.05)
                detail += f"; MASTER again (preempt) {now() - rec['t_restart']:.2f}s after the restart"
            except TimeoutError as e:
                self.anomalies.append(f"{now():.1f}s preempt back to a: {e}")
        rec["t_settled"] = now()
        self.node_down = None
        self.note("vip_restart", detail)

    def load_warmup(self):
        return min(0.2 * self.duration, 30.0)

    def promotion(self, x):
        d = f"{self.lab.dir}/pg"
        t_stop = now()
        self.lab.pg_cmd("pg_ctl", "-D", f"{d}/primary", "-m", "immediate", "stop")
        self.lab.pg_cmd("pg_ctl", "-D", f"{d}/replica", "-w", "promote")
        t_prom = now()
        rec = dict(t_stop=t_stop, t_promoted=t_prom, t_detected=None)
        self.promotion_rec = rec

        def moved():
            for n in self.alive_nodes():
                p = self.lab.pool(n, "pg")
                srv = {s["address"]: s["status"] for s in p["servers"]}
                if srv.get(f"{PG_REPLICA_IP}:{PG_PORT}") != "UP" or p["eligible"] != 1:
                    return False
            return True
        try:
            wait_for("rampart's pg pool to follow the promotion", moved, 20)
            rec["t_detected"] = now()
        except TimeoutError as e:
            self.anomalies.append(f"{now():.1f}s promotion not followed: {e}")
            rec["t_detected"] = now()
        self.pg_windows.append((t_stop, rec["t_detected"] + 0.5))
        self.note("promotion", t=t_stop, detail=f"primary stopped (-m immediate), replica promoted after "
                               f"{t_prom - t_stop:.2f}s; rampart's pg pool on it "
                               f"{rec['t_detected'] - t_prom:.2f}s after pg_ctl promote returned "
                               "(the old primary stays down: single primary from here on)")

    def finish(self):
        """Stops new faults and runs every pending restore now."""
        self.stop.set()
        self.thread.join(120)


# --------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------


def in_any(t, intervals):
    return any(a <= t < (b if b is not None else 1e18) for a, b in intervals)


def web_all_down(chaos, t):
    """True when no server of the web pool could serve at soak time t."""
    members = set(STATIC)
    for i, (tf, m) in enumerate(chaos.dns_history):
        nxt = chaos.dns_history[i + 1][0] if i + 1 < len(chaos.dns_history) else 1e18
        # a flipped-away set may still be in use for TTL + grace
        if tf <= t < nxt + DNS_TTL + DNS_GRACE:
            members |= set(m)
    for p, a, b, why in chaos.removed:
        if why.startswith("admin") and a <= t < (b if b is not None else 1e18):
            members.discard(p)
    for p, a, b in chaos.pod_down_intervals:
        if a <= t < b:
            members.discard(p)
    for p, a in chaos.open_down.items():
        if a <= t:
            members.discard(p)
    return not members


def excused(chaos, r):
    if r["kind"] == "pg":
        return any(r["t0"] < b and r["t1"] > a for a, b in chaos.pg_windows)
    t = r["t0"]
    while t <= r["t1"]:
        if web_all_down(chaos, t):
            return True
        t += 0.1
    return web_all_down(chaos, r["t1"])


def parse_ha_events(lab):
    out = []
    try:
        with open(f"{lab.dir}/ha-events.log") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in ("INIT", "BACKUP", "MASTER", "FAULT"):
                    out.append((float(parts[0]) - T0, parts[2], parts[1]))
    except FileNotFoundError:
        pass
    return sorted(out)


def fmt_t(t):
    return f"{t:7.1f}s" if t is not None else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", default=os.path.join(HERE, "SOAK-REPORT.md"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--pool-retries", type=int, default=2,
                    help="the web pool's retries (default 2); 0 is a negative control: "
                         "assertion 1 must then fail")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak.py needs root (network namespaces)")
    rampart = os.environ.get("RAMPART", f"{REPO}/target/debug/rampart")
    if not os.access(rampart, os.X_OK):
        sys.exit(f"no rampart binary at {rampart} (set RAMPART)")

    lab = Lab(args)
    atexit.register(lab.cleanup)
    # one binary for the whole run, even if it is rebuilt meanwhile
    os.makedirs(lab.dir, exist_ok=True)
    os.chmod(lab.dir, 0o755)
    shutil.copy2(rampart, f"{lab.dir}/rampart")
    lab.rampart = f"{lab.dir}/rampart"
    with open(rampart, "rb") as f:
        lab.rampart_sha = hashlib.sha256(f.read()).hexdigest()[:16]

    def on_signal(sig, frame):
        log(f"signal {sig}: cleaning up")
        lab.cleanup()
        os._exit(1)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        rc = soak(lab, args, rampart)
    except Exception:
        log(f"soak aborted:\n{traceback.format_exc()}")
        rc = 1
        write_report_aborted(args, traceback.format_exc())
    finally:
        lab.cleanup()
    sys.exit(rc)


def write_report_aborted(args, tb):
    with open(args.report, "w") as f:
        f.write(f"# rampart chaos soak: ABORTED\n\nseed {args.seed}, duration {args.duration}s\n\n"
                f"```\n{tb}\n```\n")


def soak(lab, args, rampart):
    log(f"seed {args.seed}, duration {args.duration}s, rampart {rampart}, work dir {lab.dir}")
    lab.setup()
    dur = args.duration
    warmup = min(0.2 * dur, 30.0)
    # baselines of the first processes: idle, pools healthy, before any load
    for n in ("a", "b"):
        p = lab.procs[n]
        p.baseline_fd = count_fds(p.pid)
        p.baseline_fds = describe_fds(p.pid)
        p.baseline_tasks = lab.alive_tasks(n)
        log(f"baseline of {n} (pid {p.pid}): {p.baseline_fd} fds, alive tasks {p.baseline_tasks}, "
            f"RSS {read_rss_kb(p.pid)} kB")
    load = Load(lab, args.seed)
    mon = Monitor(lab, warmup)
    t_load = now()
    for n in ("a", "b"):
        lab.procs[n].warm_at = t_load + warmup
    chaos = Chaos(lab, load, args.seed, dur, t_load)
    mon.t.start()
    load.start()
    chaos.thread.start()
    log(f"load started; warm-up until {t_load + warmup:.1f}s; {len(chaos.heap)} faults scheduled")
    t_end = t_load + dur
    next_progress = now() + 10
    while now() < t_end:
        time.sleep(min(0.5, max(0.0, t_end - now())))  # pacing: the run's length
        if now() >= next_progress:
            next_progress += 10
            done = len(load.recs)
            bad = sum(1 for r in load.recs if not r["ok"])
            log(f"progress: {done} requests/sessions, {bad} not ok")
    # RSS at the end, with the load still on (as at warm-up)
    for p in lab.all_procs:
        if p.popen.poll() is None:
            p.end_rss = read_rss_kb(p.pid)
    t_stop = now()
    log("stopping the load; running pending restores")
    load.join(30)
    # connections a node still holds on the VIP while it is not the master: the client
    # closed them, but its FIN/RST went to the node that holds the VIP now
    orphans = {}
    for p in lab.all_procs:
        if p.popen.poll() is None:
            try:
                state = lab.ha_state(p.node)
                vip_conns = [x for x in describe_fds(p.pid)
                             if x.startswith(f"tcp {VIP}:") and "LISTEN" not in x]
                orphans[p.pid] = (p.node, state, vip_conns)
            except Exception as e:
                orphans[p.pid] = (p.node, f"? ({e!r})", [])
    chaos.finish()
    t_quiet = now()
    # connections idle out: fds and tasks back to their baselines (polled, with a deadline)
    idle = {}
    for p in lab.all_procs:
        if p.popen.poll() is not None:
            continue
        res = dict(fd_end=None, tasks_end=None, fd_ok=None, tasks_ok=None, settle=None)

        def fd_back(p=p, res=res):
            res["fd_end"] = count_fds(p.pid)
            return res["fd_end"] <= p.baseline_fd + FD_TOLERANCE

        def tasks_back(p=p, res=res):
            res["tasks_end"] = lab.alive_tasks(p.node)
            return res["tasks_end"] is None or res["tasks_end"] <= p.baseline_tasks + TASK_TOLERANCE
        try:
            wait_for(f"fds of {p.node}/{p.pid} back to baseline", fd_back, 60, poll=0.25)
            res["fd_ok"] = True
            # within the tolerance: give it a few more seconds to reach the baseline exactly
            try:
                wait_for("exact fd baseline", lambda: count_fds(p.pid) <= p.baseline_fd, 10, poll=0.25)
            except TimeoutError:
                pass
            res["fd_end"] = count_fds(p.pid)
        except TimeoutError:
            res["fd_ok"] = False
        p.end_fds = describe_fds(p.pid)
        try:
            if p.baseline_tasks is not None:
                wait_for(f"tasks of {p.node}/{p.pid} back to baseline", tasks_back, 30, poll=0.25)
                res["tasks_ok"] = True
        except TimeoutError:
            res["tasks_ok"] = False
        res["settle"] = now() - t_quiet
        idle[p.pid] = res
    mon.stop.set()
    ha_events = parse_ha_events(lab)
    with open(f"{lab.dir}/violations.log") as f:
        backend_violations = [l.strip() for l in f if l.strip()]
    keys_dir = f"{lab.dir}/keys"
    lab.orphans = orphans
    rc = analyse_and_report(lab, args, rampart, load, chaos, mon, idle, ha_events, backend_violations,
                            keys_dir, t_load, t_stop, warmup)
    if args.keep:
        log(f"work directory kept: {lab.dir}")
    return rc


def analyse_and_report(lab, args, rampart, load, chaos, mon, idle, ha_events, backend_violations,
                       keys_dir, t_load, t_stop, warmup):
    recs = load.recs
    results = []  # (name, passed, detail)
    with open(f"{lab.dir}/records.jsonl", "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")

    # ---- 1. failed idempotent requests
    per = {k: dict(total=0, ok=0, failed=0, excused=0, retried=0, extra_attempts=0) for k in KINDS}
    failures = []
    for r in recs:
        c = per[r["kind"]]
        c["total"] += 1
        if r["attempts"] > 1:
            c["retried"] += 1
            c["extra_attempts"] += r["attempts"] - 1
        if r["ok"]:
            c["ok"] += 1
        elif excused(chaos, r):
            c["excused"] += 1
        else:
            c["failed"] += 1
            failures.append(r)
    idem_failed = [r for r in failures if r["kind"] in IDEMPOTENT]
    # non-idempotent failures: explained by a fault that breaks them by nature (the node
    # or the pod under them killed, the pod answering 500 or hanging) or not
    vip_moves = []
    for v in chaos.vip_faults:
        vip_moves.append((v["t_kill"] - 0.5, (v["t_takeover"] or v["t_kill"]) + 3))
        if v["t_restart"] is not None:
            vip_moves.append((v["t_restart"], (v["t_settled"] or v["t_restart"]) + 3))

    def explanation(r):
        if any(r["t0"] <= b and r["t1"] >= a for a, b in vip_moves):
            return "VIP move"
        for p, a, b in chaos.pod_down_intervals + [[p, a, 1e18] for p, a in chaos.open_down.items()]:
            if a - 0.5 <= r["t1"] and r["t0"] <= b and (r["pod"] in (None, p)):
                return f"pod {p} faulted"
        return None
    unexplained = []
    for r in failures:
        if r["kind"] not in IDEMPOTENT:
            r["why"] = explanation(r)
            if r["why"] is None:
                unexplained.append(r)
    # idempotency keys: every key the client got a success for is recorded with its body
    key_problems = list(backend_violations)
    successes = {}
    for r in recs:
        if r["kind"] == "post_key" and r["ok"]:
            successes[r["key"]] = successes.get(r["key"], 0) + 1
            try:
                with open(os.path.join(keys_dir, r["key"])) as f:
                    stored = f.read().split()[0]
                if stored != r["sha"]:
                    key_problems.append(f"key {r['key']}: stored body {stored} != sent {r['sha']}")
            except FileNotFoundError:
                key_problems.append(f"key {r['key']}: success but the backend never recorded it")
    key_problems += [f"key {k}: {n} successes" for k, n in successes.items() if n != 1]
    replays = sum(1 for r in recs if r["kind"] == "post_key" and r.get("replay"))
    a1 = not idem_failed and not key_problems
    results.append(("1. no failed idempotent request (GET, keyed POST, h2 GET, pg read)", a1,
                    f"{len(idem_failed)} failed (not excused), {len(key_problems)} idempotency-key problems"))

    # ---- 2. answers from removed servers
    stale = []
    for r in recs:
        if not r["ok"] or not r.get("pod") or r["kind"] == "pg":
            continue
        for p, a, b, why in chaos.removed:
            # sent after the removal took effect, answered before the server came back
            # (a request in flight across an undrain or re-add may be retried onto it)
            if p == r["pod"] and a <= r["ts"] and r["t1"] < (b if b is not None else 1e18):
                stale.append((r, why, a))
    results.append(("2. no request answered by a removed server", not stale,
                    f"{len(stale)} answers from removed servers"))

    # ---- 3. RSS
    rss_rows, rss_ok = [], True
    for p in lab.all_procs:
        if p.end_rss is None:
            rss_rows.append((p, "started after the load ended (a pending restore): not asserted"
                             if p.started >= t_stop else
                             "not alive at the end (killed by the VIP fault): not asserted"))
            continue
        if p.warm_rss is None or p.warm_measured_at is None or t_stop - p.warm_measured_at < 10:
            rss_rows.append((p, f"too young (warm-up point after {fmt_t(p.warm_at)}, end {t_stop:.1f}s): "
                                "not asserted"))
            continue
        growth = (p.end_rss - p.warm_rss) / p.warm_rss
        ok = growth <= RSS_TOLERANCE
        rss_ok &= ok
        rss_rows.append((p, f"warm-up {p.warm_rss} kB at {p.warm_measured_at:.1f}s, end {p.end_rss} kB: "
                            f"{100 * growth:+.1f}% {'PASS' if ok else 'FAIL'}"))
    asserted_rss = [row for row in rss_rows if "PASS" in row[1] or "FAIL" in row[1]]
    results.append(("3. RSS at the end within 10% of RSS after warm-up", rss_ok and bool(asserted_rss),
                    f"{len(asserted_rss)} processes asserted" if asserted_rss else "no process asserted"))

    # ---- 4 and 5. fds and tasks back to baseline
    fd_ok = all(v["fd_ok"] for v in idle.values()) and bool(idle)
    results.append((f"4. fd count back to baseline (+{FD_TOLERANCE}) after the load stops", fd_ok,
                    "; ".join(f"{pid}: {v['fd_end']}" for pid, v in idle.items())))
    tasks_present = any(p.baseline_tasks is not None for p in lab.all_procs)
    if tasks_present:
        t_ok = all(v["tasks_ok"] in (True, None) for v in idle.values())
        results.append((f"5. rampart_runtime_alive_tasks back to baseline (+{TASK_TOLERANCE})", t_ok,
                        "; ".join(f"{pid}: {v['tasks_end']}" for pid, v in idle.items())))
    else:
        results.append(("5. rampart_runtime_alive_tasks back to baseline", True,
                        "not available in this binary (not asserted)"))

    # ---- 6. false failovers
    windows = []  # (t_from, t_to, node or None, cause)
    for p in lab.all_procs:
        if p.node and p.ready_at is not None and p.started < t_load:
            windows.append((p.started, p.ready_at + 10, p.node, "start-up"))
    for v in chaos.vip_faults:
        end = (v["t_takeover"] or v["t_kill"]) + 3
        windows.append((v["t_kill"], end, v["peer"], "kill -9 of the master"))
        if v["t_restart"] is not None:
            windows.append((v["t_restart"], (v["t_settled"] or v["t_restart"]) + 3, None,
                            f"restart of {v['node']} (preempt)"))
    transitions = []
    false_fo = []
    for t, node_id, state in ha_events:
        node = node_id.replace("node-", "")
        cause = next((c for a, b, n, c in windows if a <= t <= b and (n is None or n == node)), None)
        cpu = mon.cpu_at(t)
        transitions.append((t, node, state, cause, cpu))
        if cause is None:
            false_fo.append((t, node, state, cpu))
    results.append(("6. no false failover (VIP transition without an injected cause)", not false_fo,
                    f"{len(false_fo)} false transitions"))

    sanity = list(chaos.anomalies) + [f"load worker error: {e.splitlines()[-1]}" for e in load.errors]
    for k in KINDS:
        if per[k]["ok"] == 0 and not (k == "h2_get" and h2 is None):
            sanity.append(f"no successful {k} at all: the load generator is broken")
    if h2 is None:
        sanity.append("the h2 package is missing (apt-get install python3-h2): no h2 load")
    results.append(("harness sanity (reloads applied, drains acknowledged, takeovers seen, workers ok)",
                    not sanity, f"{len(sanity)} anomalies"))

    passed = all(ok for _, ok, _ in results)

    # ---- report
    L = []
    w = L.append
    w(f"# rampart chaos soak: {'PASS' if passed else 'FAIL'}\n")
    w(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    w(f"- command: `python3 bench/soak.py --duration {args.duration:g} --seed {args.seed}`")
    w(f"- binary: `{rampart}` (sha256 {lab.rampart_sha}..., copied for the run)")
    if args.pool_retries != 2:
        w(f"- **web pool retries = {args.pool_retries}** (a negative control, not the normal config)")
    w(f"- seed {args.seed}, load duration {args.duration:g}s (load from {t_load:.1f}s to {t_stop:.1f}s "
      f"of soak time), warm-up {warmup:.0f}s")
    w(f"- CPU: {os.cpu_count()} cores; load average over the run "
      f"{min((c[1] for c in mon.cpu), default=0):.2f}..{max((c[1] for c in mon.cpu), default=0):.2f}, "
      f"CPU busy mean {sum(c[2] for c in mon.cpu) / max(1, len(mon.cpu)):.0f}% "
      f"(max {max((c[2] for c in mon.cpu), default=0):.0f}%)")
    w("- topology: namespaces on one bridge: node a 192.0.2.1 (priority 150, preempt), node b "
      "192.0.2.2 (priority 100), VIP 192.0.2.100 (advert 250ms), client 192.0.2.10, backends "
      "192.0.2.20-31 (pods p1-p6 via DNS name app.soak from dnsmasq at 192.0.2.53 TTL 1s, "
      "static s7/s8, PostgreSQL primary .30 and streaming replica .31)\n")
    w("## Assertions\n")
    w("| # | assertion | result | detail |\n|---|---|---|---|")
    for name, ok, detail in results:
        w(f"| | {name} | {'PASS' if ok else '**FAIL**'} | {detail} |")
    w("")
    w("## Traffic\n")
    w("A request is *retried* when the client needed more than one attempt (transport error, "
      "and for keyed POSTs also a 5xx; see SOAK.md); *excused* failures happened while every "
      "server of the pool was down (web: pods killed/500/hung or drained; pg: from the primary's "
      "stop until rampart's pg pool showed the promoted node UP, + 0.5 s).\n")
    w("| kind | idempotent | total | ok | failed | excused | retried | extra attempts |")
    w("|---|---|---|---|---|---|---|---|")
    for k in KINDS:
        c = per[k]
        w(f"| {k} | {'yes' if k in IDEMPOTENT else 'no (reported only)'} | {c['total']} | {c['ok']} | "
          f"{c['failed']} | {c['excused']} | {c['retried']} | {c['extra_attempts']} |")
    w("")
    idem_total = sum(per[k]["total"] for k in IDEMPOTENT)
    w(f"Error budget: idempotent requests may fail 0 times outside excused windows; used "
      f"{len(idem_failed)} of {idem_total} ({100 * len(idem_failed) / max(1, idem_total):.3f}%). "
      f"Non-idempotent (unkeyed POST, WebSocket sessions) failures: "
      f"{per['post_nokey']['failed']} of {per['post_nokey']['total']} POSTs, "
      f"{per['ws']['failed']} of {per['ws']['total']} WebSocket sessions; of these, "
      f"{len(unexplained)} are not explained by a fault under them (a VIP move, or a fault of "
      f"the pod that served them or of any pod when none answered). Keyed POSTs answered by a "
      f"backend replay of an already-processed key: {replays}.\n")
    reasons = {}
    for r in recs:
        for _, why in r["reasons"]:
            reasons[(r["kind"], why)] = reasons.get((r["kind"], why), 0) + 1
    if reasons:
        w("Client retry causes:\n")
        w("| kind | cause | count |\n|---|---|---|")
        for (k, why), n in sorted(reasons.items(), key=lambda x: -x[1])[:30]:
            w(f"| {k} | {why} | {n} |")
        w("")
        near_vip = 0
        far = []
        vwin = []
        for v in chaos.vip_faults:
            vwin.append((v["t_kill"] - 0.5, (v["t_takeover"] or v["t_kill"]) + 3))
            if v["t_restart"]:
                vwin.append((v["t_restart"], (v["t_settled"] or v["t_restart"]) + 3))
        for r in recs:
            for t, why in r["reasons"]:
                if in_any(t, vwin):
                    near_vip += 1
                else:
                    far.append((t, r["kind"], why))
        w(f"Retries within a VIP move (kill to takeover + 3 s, restart to preempt + 3 s): {near_vip}; "
          f"elsewhere: {len(far)}.\n")
        if far:
            w("Retries outside VIP moves (first 40):\n")
            w("| attempt sent | kind | cause | faults within 3 s before |\n|---|---|---|---|")
            for t, k, why in sorted(far)[:40]:
                near = [f"{f}" for (tf, f, d) in chaos.timeline if t - 3 <= tf <= t + 0.5]
                w(f"| {t:.2f}s | {k} | {why} | {', '.join(near) or '-'} |")
            w("")
    hung = []
    for r in recs:
        for t, why in r["reasons"]:
            if "Timeout" in why or "timed out" in why:
                hung.append((t, r["kind"], why))
    w("## Attempts that hung until the client's timeout\n")
    w("An attempt with no answer and no error until the client gave up (8 s for HTTP and h2, "
      "5 s for PostgreSQL). Next to a VIP move this is a request that was in flight on the "
      "node that lost the VIP: its answer is dropped and nothing tells the client (see "
      "SOAK.md, bench/soak/preempt_repro.py).\n")
    if hung:
        w("| attempt sent | kind | error | nearest VIP transition |\n|---|---|---|---|")
        for t, k, why in sorted(hung)[:40]:
            near = min(ha_events, key=lambda e: abs(e[0] - t), default=None)
            nt = f"{near[0]:.2f}s {near[1]} {near[2]} ({near[0] - t:+.2f}s)" if near else "-"
            w(f"| {t:.2f}s | {k} | {why} | {nt} |")
        w("")
    else:
        w("None.\n")
    if failures:
        w("## Failed requests (not excused; idempotent first, then unexplained; first 80)\n")
        w("Idempotent kinds are failures of assertion 1; the others are reported only, with the "
          "fault that explains them, if any.\n")
        w("| start | end | kind | attempts | status | pod | error | explained by | faults within 5 s before |")
        w("|---|---|---|---|---|---|---|---|---|")
        ordered = idem_failed + unexplained + [r for r in failures
                                               if r["kind"] not in IDEMPOTENT and r not in unexplained]
        for r in ordered[:80]:
            near = [f"{f}@{tf:.1f}" for (tf, f, d) in chaos.timeline if r["t0"] - 5 <= tf <= r["t1"]]
            err = (r["err"] or "").replace("|", "/").replace("\n", " ")[:100]
            why = "-" if r["kind"] in IDEMPOTENT else (r.get("why") or "**nothing**")
            w(f"| {r['t0']:.2f}s | {r['t1']:.2f}s | {r['kind']} | {r['attempts']} | {r['status']} | "
              f"{r['pod']} | {err} | {why} | {', '.join(near) or '-'} |")
        w("")
    if key_problems:
        w("## Idempotency-key problems\n")
        for k in key_problems[:40]:
            w(f"- {k}")
        w("")
    w("## Answers from removed servers\n")
    w(f"Removal intervals: a pod removed by a DNS flip at T must answer no request sent from "
      f"T + {DNS_TTL:g} s (TTL) + {DNS_GRACE:g} s (grace) on and answered before a later flip adds it back; a drained "
      f"server none sent after both nodes acknowledged the drain and answered before the undrain "
      f"was sent (a request still in flight at the undrain or re-add may be retried onto it). "
      f"{len(chaos.removed)} removal intervals checked against "
      f"{sum(1 for r in recs if r['ok'] and r.get('pod') and r['kind'] != 'pg')} answers.\n")
    if stale:
        w("| sent | answered | kind | pod | removed by | interval start |\n|---|---|---|---|---|---|")
        for r, why, a in stale[:40]:
            w(f"| {r['ts']:.2f}s | {r['t1']:.2f}s | {r['kind']} | {r['pod']} | {why} | {a:.2f}s |")
        w("")
    else:
        w("None.\n")
    w("## Memory, fds, tasks per rampart process\n")
    w("Node b is never killed (node a, the preferred master, is the one killed by the VIP fault: "
      "it always holds the VIP again after its restart by preemption), so b is measured over the whole "
      "run; every process of a is measured over its own lifetime: its warm-up point is its ready time "
      f"(or the load start) + {warmup:.0f}s, and its fd/task baselines were taken when it became ready "
      "(before it held the VIP). Processes killed before the end are listed, not asserted.\n")
    w("| node | pid | started | ready | killed | fd baseline | fd end (after idle) | tasks baseline | "
      "tasks end | RSS |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for p, rss_text in rss_rows:
        v = idle.get(p.pid, {})
        w(f"| {p.node} | {p.pid} | {p.started:.1f}s | {fmt_t(p.ready_at)} | {fmt_t(p.killed_at)} | "
          f"{p.baseline_fd} | {v.get('fd_end', '-')} | {p.baseline_tasks} | {v.get('tasks_end', '-')} | "
          f"{rss_text} |")
    w("")
    for p in lab.all_procs:
        if p.samples:
            rs = [s[1] for s in p.samples]
            fs = [s[2] for s in p.samples]
            w(f"- {p.node}/{p.pid}: {len(p.samples)} samples, RSS {min(rs)}..{max(rs)} kB, "
              f"fds {min(fs)}..{max(fs)} under load")
    for p in lab.all_procs:
        if p.end_fds and len(p.end_fds) != len(p.baseline_fds):
            extra = list(p.end_fds)
            for x in p.baseline_fds:
                if x in extra:
                    extra.remove(x)
            gone = list(p.baseline_fds)
            for x in p.end_fds:
                if x in gone:
                    gone.remove(x)
            w(f"- {p.node}/{p.pid} fds at the end vs baseline: extra {extra or '-'}; gone {gone or '-'}")
    for pid, (node, state, conns) in getattr(lab, "orphans", {}).items():
        if state != "MASTER" and conns:
            w(f"- right after the load stopped, node {node} ({state}, pid {pid}) still held {len(conns)} "
              f"client connection(s) on the VIP it no longer has (orphaned by a VIP move: the client's "
              f"FIN/RST reaches the new master; they end by idle timeouts: request_header_timeout, h2 "
              f"keepalive PINGs, tunnel_timeout, 1h by default): {conns}")
    if idle:
        w(f"- fds/tasks settled {max(v['settle'] for v in idle.values()):.1f}s after the load stopped "
          f"(polled, deadline 60 s)")
    w("")
    w("## VIP transitions\n")
    w("From the `[ha] notify` program of each node. A transition is caused when it falls in the "
      "window of an injected fault: start-up (until ready + 10 s), the peer within a master kill and "
      "takeover + 3 s, both nodes from a restart until the preempt settled + 3 s.\n")
    w("| time | node | new state | cause | load1 | CPU busy |\n|---|---|---|---|---|---|")
    for t, node, state, cause, cpu in transitions:
        w(f"| {t:.2f}s | {node} | {state} | {cause or '**none: false failover**'} | "
          f"{cpu[1] if cpu else '-'} | {str(cpu[2]) + '%' if cpu else '-'} |")
    w("")
    for v in chaos.vip_faults:
        tk = f"{v['t_takeover'] - v['t_kill']:.2f}s" if v["t_takeover"] else "never"
        w(f"- kill -9 of {v['node']} at {v['t_kill']:.1f}s: {v['peer']} MASTER after {tk}")
    w(f"\nFalse failovers: {len(false_fo)}.\n")
    if chaos.promotion_rec:
        pr = chaos.promotion_rec
        w(f"## PostgreSQL promotion\n\nPrimary stopped at {pr['t_stop']:.1f}s, replica promoted at "
          f"{pr['t_promoted']:.1f}s, rampart's pg pool served it at {pr['t_detected']:.1f}s. After the "
          "promotion the run goes on with the single new primary (no new replica is built); the old "
          "primary's server stays DOWN in the pool.\n")
    w("## Fault timeline\n")
    w("| time | fault | detail |\n|---|---|---|")
    for t, f, d in chaos.timeline:
        w(f"| {t:.2f}s | {f} | {d} |")
    w("")
    if sanity:
        w("## Harness anomalies\n")
        for s in sanity:
            w(f"- {s}")
        w("")
    with open(args.report, "w") as f:
        f.write("\n".join(L) + "\n")
    print()
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    for r in idem_failed[:10] + unexplained[:10]:
        tag = "FAILED" if r["kind"] in IDEMPOTENT else "unexplained (reported only)"
        print(f"  {tag} {r['kind']} at {r['t0']:.2f}-{r['t1']:.2f}s status={r['status']} pod={r['pod']} "
              f"err={r['err']}")
    for r, why, a in stale[:10]:
        print(f"  stale answer: {r['kind']} sent {r['ts']:.2f}s by {r['pod']} ({why})")
    for t, node, state, cpu in false_fo[:10]:
        print(f"  false failover: {t:.2f}s node {node} -> {state} (load {cpu})")
    for s in sanity[:10]:
        print(f"  anomaly: {s}")
    print(f"\n{'PASS' if passed else 'FAIL'}: report written to {args.report}")
    return 0 if passed else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "pod":
        run_pod(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
