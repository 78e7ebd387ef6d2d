#!/usr/bin/env python3
"""The benchmark harness behind bench/run.sh. Standard library only.

Targets: the backend (nginx, 1 worker, a fixed 6-byte response) served directly,
HAProxy, nginx and rampart as proxies in front of it. Each proxy gets the same
number of threads/workers and is pinned to its own CPU(s); the load generators and
the backend share the remaining CPU. Scenarios run interleaved (the target order
rotates every round) and the medians of the rounds are reported.
"""
import argparse, asyncio, datetime, os, platform, re, resource, shutil, signal
import socket, statistics, subprocess, sys, tempfile, time, urllib.request

PORTS = {  # target -> (http, tcp, h2)
    "direct": (19000, 19000, 19010),
    "haproxy": (19101, 19201, 19301),
    "nginx": (19102, 19202, 19302),
    "rampart": (19103, 19203, 19103),
}
PROXIES = ["haproxy", "nginx", "rampart"]
# the other way of relaying TCP bulk: HAProxy splicing (`option splice-request`
# and `splice-response`; its default is to copy; `splice-auto` did not splice this
# transfer), rampart with `splice = false` (its default is to splice bulk)
SPLICE_PORTS = {"haproxy": 19401, "rampart": 19403}
# rampart with idle connections never parked (park_idle_after = "0s")
UNPARKED_PORT = 19503


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def backend_config(d, www):
    """The backend every proxy is put in front of: nginx, 1 worker, a fixed 6-byte
    answer on / (to POSTs too, their bodies read and dropped), a sparse file on
    /big and a 16 KiB one on /f/16k (h2c on 19010 for the direct row)."""
    return f"""
worker_processes 1;
daemon off;
pid {d}/backend.pid;
error_log {d}/backend.err;
worker_rlimit_nofile 19000;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  sendfile on;
  server {{
    listen 127.0.0.1:19000 reuseport backlog=4096;
    listen 127.0.0.1:19010 http2;
    location = / {{ return 200 "hello\\n"; }}
    location = /big {{ root {www}; }}
    location /f/ {{ root {www}; }}
  }}
}}
"""


def tool_args(rampart, duration=5, connections=50):
    """The arguments a Bench takes when a tool (cpu_split.py, ab.py,
    segments.py) starts the proxies with bench.py's configs: one thread each,
    no bulk file to speak of."""
    return argparse.Namespace(rampart=rampart, threads=1, rounds=1, duration=duration,
                              connections=connections, out=None, only=None, shortest=False,
                              quick=True, bulk_mib=16, idle=100)


class Bench:
    def __init__(self, args):
        self.a = args
        self.dir = tempfile.mkdtemp(prefix="rampart-bench-")
        # nginx's workers run unprivileged and must read the bulk file
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.cmds = {}
        ncpu = os.cpu_count() or 2
        t = args.threads
        # proxy CPUs: the last `t` CPUs; load + backend: the rest (at least CPU 0)
        self.proxy_cpus = ",".join(str(c) for c in range(max(1, ncpu - t), ncpu)) if ncpu > t else "0"
        self.load_cpus = ",".join(str(c) for c in range(0, max(1, ncpu - t)))
        # HAProxy needs two descriptors per connection; stay under the hard limit
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard = 65536 if hard == resource.RLIM_INFINITY else hard
        # HAProxy needs 2 descriptors a connection, plus 2 a pipe (maxpipes below)
        self.maxconn = min(30000, (hard - 400) // 2)

    # ---------- processes ----------
    def start(self, name, cmd, cpus):
        log = open(os.path.join(self.dir, name + ".log"), "a")
        p = subprocess.Popen(["taskset", "-c", cpus] + cmd, stdout=log, stderr=log,
                             preexec_fn=raise_nofile, start_new_session=True)
        self.procs.append((name, p))
        self.cmds[name] = (cmd, cpus)
        return p

    def restart(self, name):
        """A fresh process: memory that earlier scenarios freed but the process kept
        would otherwise hide the cost of new connections."""
        for n, p in [x for x in self.procs if x[0] == name]:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            self.procs.remove((n, p))
        self.start(name, *self.cmds[name])
        for port in self.listen_ports(name):
            self.wait_port(port, name)
        time.sleep(0.5)

    def listen_ports(self, name):
        """The ports a started proxy listens on (waited for by `restart`)."""
        return PORTS[name][:2]

    def stop_all(self):
        for _, p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _, p in self.procs:
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait_port(self, port, what):
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit(f"{what} did not listen on {port}; logs in {self.dir}")

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def setup(self):
        www = os.path.join(self.dir, "www")
        os.makedirs(www)
        big = os.path.join(www, "big")
        with open(big, "wb") as f:
            f.truncate(self.a.bulk_mib * 1024 * 1024)
        os.makedirs(os.path.join(www, "f"))
        with open(os.path.join(www, "f", "16k"), "wb") as f:
            f.write(os.urandom(16 * 1024))
        # wrk's scripts for the POST rows: a body of 1 KiB, or of 64 KiB (an
        # upload: longer than rampart reads with the head, and than nginx
        # keeps in memory by default), on every request
        for name, size in (("post", 1024), ("post64k", 64 * 1024)):
            self.write(f"{name}.lua", f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n'
                       'wrk.headers["Content-Type"] = "application/json"\n')
        t = self.a.threads
        backend = self.write("backend.conf", backend_config(self.dir, www))
        haproxy = self.write("haproxy.cfg", f"""
global
  nbthread {t}
  maxconn {self.maxconn}
  maxpipes 64
defaults
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  mode http
  option http-keep-alive
  bind 127.0.0.1:19101
  bind 127.0.0.1:19301 proto h2
  default_backend be
backend be
  mode http
  http-reuse always
  server s1 127.0.0.1:19000
frontend fe_tcp
  mode tcp
  bind 127.0.0.1:19201
  default_backend be_tcp
backend be_tcp
  mode tcp
  server s1 127.0.0.1:19000
frontend fe_tcp_splice
  mode tcp
  option splice-request
  option splice-response
  bind 127.0.0.1:{SPLICE_PORTS["haproxy"]}
  default_backend be_tcp_splice
backend be_tcp_splice
  mode tcp
  option splice-request
  option splice-response
  server s1 127.0.0.1:19000
""")
        nginx = self.write("nginx.conf", f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {t};
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/nginx.err;
worker_rlimit_nofile 19000;
events {{ worker_connections 18000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream be {{ server 127.0.0.1:19000; keepalive 128; }}
  server {{
    listen 127.0.0.1:19102 reuseport backlog=4096;
    listen 127.0.0.1:19302 http2;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
stream {{
  server {{ listen 127.0.0.1:19202; proxy_pass 127.0.0.1:19000; }}
}}
""")
        rampart = self.write("rampart.toml", f"""
[global]
threads = {t}
access_log = "off"
max_connections = 30000
[admin]
bind = "127.0.0.1:19404"
[[listener]]
name = "http"
bind = ["127.0.0.1:19103"]
mode = "http"
pool = "be"
request_header_timeout = "60s"
[[listener]]
name = "tcp"
bind = ["127.0.0.1:19203"]
mode = "tcp"
pool = "be_tcp"
[[pool]]
name = "be"
# max_idle_per_server: the default (the server's peak of concurrent requests).
# A cap of 128 (this config's until 2026-12-02) made h2c's 500 concurrent
# streams open and close backend connections: 0.84x HAProxy against 1.18x.
  [[pool.server]]
  address = "127.0.0.1:19000"
[[pool]]
name = "be_tcp"
server_timeout = "60s"
  [[pool.server]]
  address = "127.0.0.1:19000"
[[listener]]
name = "tcp_copy"
bind = ["127.0.0.1:{SPLICE_PORTS["rampart"]}"]
mode = "tcp"
pool = "be_tcp_copy"
[[listener]]
name = "http_unparked"
bind = ["127.0.0.1:{UNPARKED_PORT}"]
mode = "http"
pool = "be"
request_header_timeout = "60s"
park_idle_after = "0s"
[[pool]]
name = "be_tcp_copy"
server_timeout = "60s"
splice = false
  [[pool.server]]
  address = "127.0.0.1:19000"
""")
        if self.a.shortest:
            self.shorten(haproxy, nginx, rampart)
        self.start("backend", ["nginx", "-c", backend], self.load_cpus)
        self.wait_port(19000, "the backend")
        self.start("haproxy", ["haproxy", "-db", "-f", haproxy], self.proxy_cpus)
        self.start("nginx", ["nginx", "-c", nginx], self.proxy_cpus)
        self.start("rampart", [self.a.rampart, "run", "-c", rampart], self.proxy_cpus)
        for name in PROXIES:
            for port in PORTS[name][:2]:
                self.wait_port(port, name)
        # sanity: every target answers
        for name in PORTS:
            out = sh(f"curl -s -m 2 http://127.0.0.1:{PORTS[name][0]}/").stdout
            if out != "hello\n":
                sys.exit(f"{name} does not proxy the backend: {out!r}; logs in {self.dir}")

    # ---------- measurements ----------
    def load(self, cmd):
        return sh(f"taskset -c {self.load_cpus} {cmd}")

    def wrk(self, port, extra="", path=""):
        d = self.a.duration
        out = self.load(f"wrk -t1 -c{self.a.connections} -d{d}s --latency {extra} http://127.0.0.1:{port}/{path}").stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        done = re.search(r"(\d+) requests in", out)
        lat = {}
        for p in ("50", "99"):
            m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
            if m:
                v = float(m.group(1))
                lat[p] = v / 1000 if m.group(2) == "us" else v if m.group(2) == "ms" else v * 1000
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            print(f"  wrk on {port}/{path} {extra}: {errors.group(1)} non-2xx answers", file=sys.stderr)
        sock = re.search(r"Socket errors: (.*)", out)
        return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
                "requests": int(done.group(1)) if done else 0,
                "non2xx": int(errors.group(1)) if errors else 0, "sockerr": sock.group(1) if sock else ""}

    def fixed_rate(self, port, rate, realtime=False):
        d = self.a.duration
        c = self.a.connections
        log = os.path.join(self.dir, f"h2load-{port}.log")
        # h2load appends to its log: without this, each round's figures would
        # include every round before it
        if os.path.exists(log):
            os.remove(log)
        per_client = max(1, int(rate / c))
        prio = "chrt -f 1 " if realtime else ""
        out = self.load(f"{prio}h2load --h1 -c {c} -t 1 --rps {per_client} -D {d} --log-file={log} http://127.0.0.1:{port}/")
        durs = []
        if not os.path.exists(log):
            print(f"  h2load on {port} wrote no log: {out.stderr.strip()[-300:]}", file=sys.stderr)
            return {"rps": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None}
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == "200":
                    durs.append(int(parts[2]) / 1000.0)  # microseconds -> ms
        durs.sort()
        if not durs:
            return {"rps": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None}
        q = lambda x: durs[min(len(durs) - 1, int(x * len(durs)))]
        return {"rps": len(durs) / d, "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999),
                "requests": len(durs)}

    def realtime(self, names, on):
        """Every process and thread of `names` (the backend's workers too) at
        real-time priority (SCHED_FIFO 1), or back to the default policy. A
        real-time task is not preempted by the machine's other processes,
        which on these machines take the proxy's CPU for 3 to 6 ms several
        times in a 10 s run (a trace of the fixed-rate row, bench/RESULTS.md); the
        kernel's real-time throttling still leaves them 5% of each CPU."""
        pids = []
        for n in names:
            ps = self.pids(n)
            pids += ps + [int(x) for p in ps for x in sh(f"pgrep -P {p}").stdout.split()]
        ok = True
        for pid in sorted(set(pids)):
            cmd = ["chrt", "-f", "-a", "-p", "1", str(pid)] if on else ["chrt", "-o", "-a", "-p", "0", str(pid)]
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                if on:
                    return False
                # putting back: go on with the others, report at the end
                ok = False
        return ok

    def h2(self, port):
        out = self.load(f"h2load -c {self.a.connections} -m 10 -t 1 -D {self.a.duration} http://127.0.0.1:{port}/").stdout
        m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        ok = re.search(r"(\d+) succeeded", out)
        return {"rps": float(m.group(1)) if m and ok and int(ok.group(1)) > 0 else 0.0,
                "requests": int(ok.group(1)) if ok else 0}

    def with_cpu(self, name, measure):
        """A request scenario's result, with the proxy's CPU time (user +
        system) per request it answered: all proxies are pinned to the same
        CPU, so this is how much of it each request took, a figure that
        moves less than req/s when the load generator's CPU is the limit.
        Also how idle the load generator's CPUs and the proxy's were (from
        /proc/stat): the side with no idle time left is what bounds req/s."""
        cpu0 = self.cpu_s(name)
        idle0 = cpu_idle()
        r = measure()
        idle1 = cpu_idle()
        cpu = self.cpu_s(name) - cpu0
        if name != "direct" and r.get("requests"):
            r["cpu_us"] = cpu * 1e6 / r["requests"]
        for key, cpus in (("load_idle", self.load_cpus), ("proxy_idle", self.proxy_cpus)):
            idle = total = 0
            for c in cpus.split(","):
                i0, t0 = idle0[int(c)]
                i1, t1 = idle1[int(c)]
                idle, total = idle + i1 - i0, total + t1 - t0
            r[key] = 100.0 * idle / total if total else None
        return r

    def bulk(self, port, name):
        """MB/s of one transfer, and the proxy's CPU time per GiB moved: the
        transfer is often bound by curl and the backend (the direct row), while
        the proxy's CPU time shows what relaying costs it."""
        cpu0 = self.cpu_s(name)
        out = self.load(f"curl -s -o /dev/null -m 120 -w '%{{speed_download}} %{{size_download}}' http://127.0.0.1:{port}/big").stdout.split()
        cpu = self.cpu_s(name) - cpu0
        size = int(float(out[1])) if len(out) > 1 else 0
        if size != self.a.bulk_mib * 1024 * 1024:
            return {"mbps": 0.0}
        r = {"mbps": float(out[0]) / 1e6}
        if name != "direct":
            r["cpu_ms_per_gib"] = cpu * 1000 / (self.a.bulk_mib / 1024)
        return r

    def pids(self, name):
        if name == "nginx":
            pid = int(open(os.path.join(self.dir, "nginx.pid")).read())
            return [pid] + [int(x) for x in sh(f"pgrep -P {pid}").stdout.split()]
        return [p.pid for n, p in self.procs if n == name]

    def cpu_s(self, name):
        """User + system CPU seconds of a proxy's processes so far."""
        if name == "direct":
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids(name):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def rss_kib(self, name):
        pids = self.pids(name)
        total = 0
        for pid in pids:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def parked(self):
        """rampart's idle connections parked now (its admin API's metrics)."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:19404/metrics", timeout=5) as r:
                m = re.search(r"^rampart_connections_parked (\d+)", r.read().decode(), re.M)
            return int(m.group(1)) if m else 0
        except OSError:
            return 0

    def idle(self, name, port=None):
        """RSS growth holding N idle keep-alive connections. rampart's connections
        are measured parked: once all N are (park_idle_after after their one
        request), and after the accept loop let go of their finished tasks (at
        most a second later); on UNPARKED_PORT, as tasks."""
        parking = name == "rampart" and port is None
        port = port or PORTS[name][0]
        n = self.a.idle
        self.restart(name)
        before = self.rss_kib(name)

        async def hold():
            conns = []
            drained = 0
            for i in range(n):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                conns.append((r, w))
                if len(conns) - drained >= 500 or i == n - 1:
                    await asyncio.gather(*(drain(r) for r, _ in conns[drained:]))
                    drained = len(conns)
            await asyncio.sleep(1.0)
            if parking:
                deadline = time.time() + 30
                while self.parked() < n and time.time() < deadline:
                    await asyncio.sleep(0.1)
                if self.parked() < n:
                    sys.exit(f"rampart parked {self.parked()} of {n} idle connections in 30 s")
                await asyncio.sleep(1.5)
            after = self.rss_kib(name)
            for _, w in conns:
                w.close()
            return after

        async def drain(r):
            head = await r.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await r.readexactly(int(m.group(1)) if m else 0)

        after = asyncio.run(hold())
        time.sleep(1.0)
        return {"rss_mib": after / 1024, "bytes_per_conn": max(0, (after - before) * 1024 / n)}

    def idle_h2(self, name):
        """RSS growth holding N idle h2c connections, one GET done on each,
        opened one after another as fast as they answer (bench/h2_idle.py,
        pace 0): what a burst of HTTP/2 clients leaves behind once they all
        went quiet."""
        n = self.a.idle
        self.restart(name)
        # the worker: nginx's is its master's child
        pid = self.pids(name)[-1]
        out = sh(f"/usr/bin/python3 {os.path.dirname(os.path.abspath(__file__))}/h2_idle.py "
                 f"{PORTS[name][2]} {n} {pid}").stdout
        m = re.search(r"RSS (\d+) -> (\d+) KiB, (\d+) bytes each", out)
        if not m:
            sys.exit(f"bench/h2_idle.py against {name} printed {out!r}")
        return {"rss_mib": int(m.group(2)) / 1024, "bytes_per_conn": int(m.group(3))}

    def shorten(self, haproxy, nginx, rampart):
        """--shortest: each proxy with its defaults. What the tuned configs add to
        the shortest working one is taken out: HAProxy's `http-reuse always` (its
        default is `safe`), nginx's upstream keep-alive (`keepalive 128` and the
        HTTP/1.1 settings it needs: by default nginx opens a connection to the
        server per request) and its client keep-alive limits, rampart's
        `max_connections` and `request_header_timeout` (its idle pool is the
        default, sized by demand, in both runs)."""
        cut = {
            haproxy: ["  http-reuse always\n", "  option http-keep-alive\n", f"  maxconn {self.maxconn}\n"],
            nginx: ["  keepalive_requests 10000000;\n", "  keepalive_timeout 300s;\n", " keepalive 128;",
                    " proxy_http_version 1.1; proxy_set_header Connection \"\";"],
            rampart: ["max_connections = 30000\n",
                      'request_header_timeout = "60s"\n'],
        }
        for path, lines in cut.items():
            with open(path) as f:
                text = f.read()
            for line in lines:
                if line not in text:
                    sys.exit(f"--shortest: {line!r} is not in {path}")
                text = text.replace(line, "")
            with open(path, "w") as f:
                f.write(text)

    # ---------- the run ----------
    def run(self):
        raise_nofile()
        self.setup()
        targets = list(PORTS)
        results = {}  # (scenario, target) -> [dict]
        order = targets[:]
        only = set(self.a.only.split(",")) if self.a.only else None
        want = lambda sc: only is None or sc in only
        for rnd in range(self.a.rounds):
            print(f"round {rnd + 1}/{self.a.rounds}", file=sys.stderr)
            # the fixed rate is set from this round's keep-alive figures
            for t in order if want("keepalive") or want("fixed") else []:
                results.setdefault(("keepalive", t), []).append(self.with_cpu(t, lambda: self.wrk(PORTS[t][0])))
            # an API's other requests: a POST of 1 KiB or 64 KiB, and a 16 KiB answer
            for post in ("post", "post64k"):
                for t in order if want(post) else []:
                    lua = os.path.join(self.dir, f"{post}.lua")
                    results.setdefault((post, t), []).append(
                        self.with_cpu(t, lambda: self.wrk(PORTS[t][0], f"-s {lua}")))
            for t in order if want("get16k") else []:
                results.setdefault(("get16k", t), []).append(
                    self.with_cpu(t, lambda: self.wrk(PORTS[t][0], path="f/16k")))
            for t in order if want("close") else []:
                results.setdefault(("close", t), []).append(
                    self.with_cpu(t, lambda: self.wrk(PORTS[t][0], '-H "Connection: close"')))
            if want("fixed"):
                # fixed rate: half the slowest proxy's keep-alive throughput this round
                slowest = min(results[("keepalive", p)][-1]["rps"] for p in PROXIES)
                rate = int(slowest * 0.5)
                for t in order:
                    r = self.with_cpu(t, lambda: self.fixed_rate(PORTS[t][0], rate))
                    r["target_rps"] = rate
                    results.setdefault(("fixed", t), []).append(r)
                # the same with the backend, the proxy and h2load at real-time
                # priority: the proxies' own tails, without the machine's other
                # processes taking the proxy's CPU in the middle of a run
                for t in order:
                    names = ["backend"] + ([t] if t != "direct" else [])
                    if not self.realtime(names, True):
                        self.realtime(names, False)
                        print("  no real-time priority (chrt failed): the fixed-rate SCHED_FIFO rows are left out",
                              file=sys.stderr)
                        break
                    try:
                        r = self.with_cpu(t, lambda: self.fixed_rate(PORTS[t][0], rate, realtime=True))
                    finally:
                        if not self.realtime(names, False):
                            sys.exit(f"could not set {names} back to the default scheduling policy")
                    results.setdefault(("fixed_rt", t), []).append(r)
            for t in order if want("h2") else []:
                results.setdefault(("h2", t), []).append(self.with_cpu(t, lambda: self.h2(PORTS[t][2])))
            # the shortest configs are about request rows; bulk and idle
            # connections are measured with the tuned ones
            for t in order if not self.a.shortest and want("bulk") else []:
                results.setdefault(("bulk", t), []).append(self.bulk(PORTS[t][1], t))
                if t in SPLICE_PORTS:
                    results.setdefault(("bulk_other", t), []).append(self.bulk(SPLICE_PORTS[t], t))
                # the same file as one HTTP response, through the HTTP listener
                results.setdefault(("bulk_http", t), []).append(self.bulk(PORTS[t][0], t))
            for t in [x for x in order if x != "direct" and not self.a.shortest and want("idle")]:
                results.setdefault(("idle", t), []).append(self.idle(t))
                if t == "rampart":
                    results.setdefault(("idle_unparked", t), []).append(self.idle(t, UNPARKED_PORT))
                results.setdefault(("idle_h2", t), []).append(self.idle_h2(t))
            order = order[1:] + order[:1]
        return results


def cpu_idle():
    """Per CPU number: (idle + iowait ticks, all ticks) so far, from /proc/stat."""
    r = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                t = [int(x) for x in m.group(2).split()]
                r[int(m.group(1))] = (t[3] + t[4], sum(t[:8]))
    return r


def med(vals, key):
    xs = [v[key] for v in vals if v.get(key) is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit=""):
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    if abs(x) >= 100:
        return f"{x:.0f}{unit}"
    return f"{x:.2f}{unit}" if abs(x) < 10 else f"{x:.1f}{unit}"


def ratio(a, b, lower_is_better=False):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def render(results, args, versions):
    rows = [
        ("keepalive", "rps", "HTTP/1.1 keep-alive, req/s", False),
        ("keepalive", "p50_ms", "HTTP/1.1 keep-alive, p50 ms", True),
        ("keepalive", "p99_ms", "HTTP/1.1 keep-alive, p99 ms", True),
        ("keepalive", "cpu_us", "HTTP/1.1 keep-alive, the proxy's CPU µs per request", True),
        ("keepalive", "load_idle", "HTTP/1.1 keep-alive, idle share of the load generator's CPU, %", None),
        ("keepalive", "proxy_idle", "HTTP/1.1 keep-alive, idle share of the proxy's CPU, %", None),
        ("post", "rps", "HTTP/1.1 keep-alive POST (1 KiB body), req/s", False),
        ("post", "cpu_us", "HTTP/1.1 keep-alive POST, the proxy's CPU µs per request", True),
        ("post64k", "rps", "HTTP/1.1 keep-alive POST (64 KiB body), req/s", False),
        ("post64k", "cpu_us", "HTTP/1.1 keep-alive POST of 64 KiB, the proxy's CPU µs per request", True),
        ("get16k", "rps", "HTTP/1.1 keep-alive, 16 KiB answers, req/s", False),
        ("get16k", "cpu_us", "HTTP/1.1 keep-alive, 16 KiB answers, the proxy's CPU µs per request", True),
        ("close", "rps", "HTTP/1.1 new connection per request, req/s", False),
        ("close", "cpu_us", "HTTP/1.1 new connection per request, the proxy's CPU µs per request", True),
        ("close", "load_idle", "HTTP/1.1 new connection per request, idle share of the load generator's CPU, %", None),
        ("close", "proxy_idle", "HTTP/1.1 new connection per request, idle share of the proxy's CPU, %", None),
        ("fixed", "target_rps", "fixed rate: offered req/s (50% of the slowest proxy)", False),
        ("fixed", "p50_ms", "fixed rate, p50 ms", True),
        ("fixed", "p99_ms", "fixed rate, p99 ms", True),
        ("fixed", "p999_ms", "fixed rate, p99.9 ms", True),
        ("fixed", "cpu_us", "fixed rate, the proxy's CPU µs per request", True),
        ("fixed_rt", "p50_ms", "fixed rate, every bench process at real-time priority (SCHED_FIFO), p50 ms", True),
        ("fixed_rt", "p99_ms", "fixed rate, real-time priority, p99 ms", True),
        ("fixed_rt", "p999_ms", "fixed rate, real-time priority, p99.9 ms", True),
        ("h2", "rps", "HTTP/2 (h2c, 10 streams/conn), req/s", False),
        ("h2", "cpu_us", "HTTP/2 (h2c), the proxy's CPU µs per request", True),
        ("h2", "load_idle", "HTTP/2 (h2c), idle share of the load generator's CPU, %", None),
        ("h2", "proxy_idle", "HTTP/2 (h2c), idle share of the proxy's CPU, %", None),
        ("bulk", "mbps", f"TCP mode bulk ({args.bulk_mib} MiB), defaults (HAProxy copies, rampart splices), MB/s", False),
        ("bulk", "cpu_ms_per_gib", "TCP mode bulk, defaults, the proxy's CPU ms per GiB", True),
        ("bulk_splice", "mbps", "TCP mode bulk, both splicing (HAProxy `option splice-request`/`-response`), MB/s", False),
        ("bulk_splice", "cpu_ms_per_gib", "TCP mode bulk, both splicing, the proxy's CPU ms per GiB", True),
        ("bulk_copy", "mbps", "TCP mode bulk, both copying (rampart `splice = false`), MB/s", False),
        ("bulk_copy", "cpu_ms_per_gib", "TCP mode bulk, both copying, the proxy's CPU ms per GiB", True),
        ("bulk_http", "mbps", f"HTTP mode bulk ({args.bulk_mib} MiB, one response), defaults (HAProxy and nginx copy, rampart splices), MB/s", False),
        ("bulk_http", "cpu_ms_per_gib", "HTTP mode bulk, the proxy's CPU ms per GiB", True),
        ("idle", "rss_mib", f"RSS holding {args.idle} idle keep-alive conns, MiB", True),
        ("idle", "bytes_per_conn", "bytes per idle connection", True),
        ("idle_unparked", "bytes_per_conn", "bytes per idle connection, rampart not parking (`park_idle_after = \"0s\"`)", True),
        ("idle_h2", "bytes_per_conn", f"bytes per idle HTTP/2 connection ({args.idle} h2c, one GET each, opened back to back)", True),
    ]
    out = ["| scenario | direct | haproxy | nginx | rampart | rampart/haproxy | rampart/nginx |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for sc, key, label, lower in rows:
        # the bulk rows by way of relaying: each target's figure from its default
        # run ("bulk") or its other-way run ("bulk_other"); nginx's stream module
        # has one way (copying)
        src = {t: sc for t in PORTS}
        if sc == "bulk_splice":
            src = {t: "bulk" for t in PORTS} | {"haproxy": "bulk_other"}
        elif sc == "bulk_copy":
            src = {t: "bulk" for t in PORTS} | {"rampart": "bulk_other"}
        elif sc == "idle_unparked":
            src = {t: "idle" for t in PORTS} | {"rampart": "idle_unparked"}
        vals = {t: med(results.get((src[t], t), []), key) for t in PORTS}
        # an idle share is a reading, not a figure to compare: no ratios
        rh, rn = ((ratio(vals['rampart'], vals['haproxy']), ratio(vals['rampart'], vals['nginx']))
                  if lower is not None else ("-", "-"))
        out.append(f"| {label} | {fmt(vals['direct'])} | {fmt(vals['haproxy'])} | {fmt(vals['nginx'])} | "
                   f"{fmt(vals['rampart'])} | {rh} | {rn} |")
    return "\n".join(out)


def versions(args):
    v = {}
    v["kernel"] = platform.release()
    v["cpus"] = str(os.cpu_count())
    v["haproxy"] = sh("haproxy -v").stdout.splitlines()[0] if sh("haproxy -v").stdout else "?"
    v["nginx"] = (sh("nginx -v").stderr.strip() or "?")
    v["wrk"] = (sh("wrk -v").stdout.splitlines() or ["?"])[0]
    v["h2load"] = (sh("h2load --version").stdout.strip() or "?")
    v["rampart"] = sh(f"{args.rampart} --version").stdout.strip()
    v["rustc"] = sh("rustc --version").stdout.strip()
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--out")
    ap.add_argument("--only", help="a comma-separated subset of the scenarios: "
                    "keepalive, post, post64k, get16k, close, fixed, h2, bulk, idle")
    ap.add_argument("--shortest", action="store_true",
                    help="every proxy with its defaults (the shortest working config)")
    args = ap.parse_args()
    if args.quick:
        args.rounds = args.rounds or 1
        args.duration = args.duration or 3
        args.bulk_mib, args.idle = 256, 2000
    else:
        args.rounds = args.rounds or 3
        args.duration = args.duration or 10
        # 10,000 needs more descriptors than HAProxy gets under a 20,000 hard limit
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        args.bulk_mib, args.idle = 1024, 10000 if hard == resource.RLIM_INFINITY or hard >= 40000 else 8000
    b = Bench(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        results = b.run()
    finally:
        b.stop_all()
    v = versions(args)
    table = render(results, args, v)
    cmd = "bench/run.sh " + " ".join(sys.argv[3:])
    report = f"""# Benchmark results

Run {started:%Y-%m-%d %H:%M} UTC with `{cmd.strip()}`: {args.rounds} round(s) of {args.duration} s per
scenario and target, interleaved, medians. Proxies: {args.threads} thread(s)/worker(s) each, pinned
to CPU(s) {b.proxy_cpus}; wrk, h2load, curl and the backend on CPU(s) {b.load_cpus}.
{args.connections} client connections unless stated.{" Shortest configs: every proxy with its defaults (bench.py's `shorten`)." if args.shortest else ""}

{table}

Machine: {v['cpus']} CPUs, Linux {v['kernel']}. {v['haproxy']}; {v['nginx']}; {v['wrk']};
{v['h2load']}; {v['rampart']} ({v['rustc']}).

"direct" is the backend (nginx, 1 worker, a 6-byte response) without a proxy; it shares its
CPU with the load generator, so it is a reference, not a ceiling. Ratios above 1.00 favour rampart
for throughput rows; for latency and memory rows, below 1.00 favours rampart.
"""
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
