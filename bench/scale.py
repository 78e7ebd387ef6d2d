#!/usr/bin/env python3
"""How rampart's costs grow with the size of its config and its load: bench/scale.sh.

Parts (all by default; --only picks some):

  pick     the cost of one pick in a pool of 10 .. 10,000 servers, for each
           balancer: ns (examples/scalebench) and instructions (callgrind:
           (Ir(N2 picks) - Ir(N1 picks)) / (N2 - N1))
  routes   one routing among 1, 100, 10,000 routes (exact host, wildcard host,
           path prefix): ns and instructions, the same way
  dns      a refresh of a DNS name of 10, 1,000, 10,000 members where one
           member left and another came, for each balancer: time and bytes
           allocated, in place and (for comparison) by building the pool anew
  memory   bytes a snapshot holds per server, per balancer (a counting allocator)
  size     req/s through rampart and HAProxy in front of pools of 10 .. 10,000
           servers (an nginx listening on as many loopback addresses), each
           balancer, and the proxies' RSS per server
  pools    1,000 pools x 10 servers behind 1,000 host routes: start-up time, RSS
           and reload time, with HAProxy's start-up time and RSS for the same
  idle     100,000 idle keep-alive connections on one thread: RSS, bytes per
           connection, and the accept rate of each tenth, for rampart, HAProxy
           and nginx

Traffic stays on loopback: servers are 127.1.x.y, clients 127.0.0.1 and
127.0.2.x. Standard library only.
"""
import argparse, asyncio, datetime, json, os, re, resource, shutil, signal
import socket, subprocess, sys, tempfile, time, urllib.request

BALANCERS = {  # rampart -> HAProxy
    "round_robin": "balance roundrobin",
    "least_conn": "balance leastconn",
    "random_two": "balance random(2)",
    "hash": "balance uri\n  hash-type consistent",
}


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw)


def nofile_limit():
    """The descriptors a process may have: 400,000 where this process may raise
    its hard limit (root with CAP_SYS_RESOURCE), else its hard limit."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (400_000, 400_000))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


NOFILE = nofile_limit()
# HAProxy counts 2 descriptors a connection (and 2 a pipe)
HAPROXY_MAXCONN = (NOFILE - 400) // 2


def raise_nofile():
    nofile_limit()


def server_addr(i):
    return f"127.1.{(i >> 8) & 255}.{i & 255}" if i < 65536 else sys.exit("too many servers")


class Scale:
    def __init__(self, a):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix="rampart-scale-")
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.rows = []  # (section, markdown lines)

    # ---------- processes ----------
    def start(self, name, cmd, cpus):
        log = open(os.path.join(self.dir, name + ".log"), "a")
        p = subprocess.Popen(["taskset", "-c", cpus] + cmd, stdout=log, stderr=log,
                             preexec_fn=raise_nofile, start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop(self, name):
        for n, p in [x for x in self.procs if x[0] == name]:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            self.procs.remove((n, p))

    def stop_all(self):
        for name in {n for n, _ in self.procs}:
            self.stop(name)
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def wait_port(self, host, port, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                socket.create_connection((host, port), timeout=0.2).close()
                return time.time()
            except OSError:
                time.sleep(0.005)
        sys.exit(f"{what} did not listen on {host}:{port}; logs in {self.dir}")

    def pids(self, name):
        ps = [p.pid for n, p in self.procs if n == name]
        if name == "nginx-proxy":
            # its worker
            ps += [int(x) for p in list(ps) for x in sh(f"pgrep -P {p}").stdout.split()]
        return sorted(set(ps))

    def rss_kib(self, name):
        total = 0
        for pid in self.pids(name):
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total

    # ---------- in process ----------
    def scalebench(self, *args):
        out = sh(f"{self.a.scalebench} {' '.join(map(str, args))}", env=os.environ | {"RUST_BACKTRACE": "0"})
        if out.returncode != 0:
            sys.exit(f"scalebench {args}: {out.stderr}")
        return {k: float(v) for k, v in (l.split() for l in out.stdout.splitlines())}

    def instructions(self, args, n1, n2):
        """Instructions per iteration: (Ir(n2) - Ir(n1)) / (n2 - n1)."""
        ir = []
        for n in (n1, n2):
            out = os.path.join(self.dir, "cg.out")
            r = sh(f"valgrind --tool=callgrind --callgrind-out-file={out} {self.a.scalebench} "
                   f"{' '.join(map(str, args))} {n}", env=os.environ | {"RUST_BACKTRACE": "0"})
            m = re.search(r"refs:\s+([\d,]+)", r.stderr)
            if not m:
                sys.exit(f"callgrind: {r.stderr[-2000:]}")
            ir.append(int(m.group(1).replace(",", "")))
        return (ir[1] - ir[0]) / (n2 - n1)

    def pick(self):
        sizes = self.a.sizes
        lines = ["| balancer | " + " | ".join(f"{n:,} servers" for n in sizes) + " |",
                 "|---|" + "---:|" * len(sizes)]
        for b in BALANCERS:
            cells = []
            for n in sizes:
                ns = self.scalebench("pick", b, n, self.a.iters)["pick_ns"]
                ir = self.instructions(["pick", b, n], 20_000, 120_000) if self.a.callgrind else None
                cells.append(f"{ns:.0f} ns" + (f", {ir:,.0f} instr" if ir is not None else ""))
                print(f"pick {b} {n}: {cells[-1]}", file=sys.stderr)
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
        self.rows.append(("One pick (`Pool::acquire` and its release), in process", lines))

    def routes(self):
        sizes = [1, 100, 10_000]
        lines = ["| routes | " + " | ".join(f"{n:,}" for n in sizes) + " |",
                 "|---|" + "---:|" * len(sizes)]
        for kind, label in [("host", "exact host"), ("wildcard", "wildcard host"), ("prefix", "path prefix")]:
            cells = []
            for n in sizes:
                ns = self.scalebench("routes", kind, n, self.a.iters)["route_ns"]
                ir = self.instructions(["routes", kind, n], 100_000, 600_000) if self.a.callgrind else None
                cells.append(f"{ns:.0f} ns" + (f", {ir:,.0f} instr" if ir is not None else ""))
                print(f"routes {kind} {n}: {cells[-1]}", file=sys.stderr)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        self.rows.append(("One routing decision, the request matching the last route, in process", lines))

    def dns(self):
        sizes = [10, 1_000, 10_000]
        head = ["| balancer | step | " + " | ".join(f"{n:,} members" for n in sizes) + " |",
                "|---|---|" + "---:|" * len(sizes)]
        lines = list(head)
        answer = None
        for b in ["round_robin", "least_conn", "random_two", "hash"]:
            # each figure is the fastest of 5 runs inside scalebench; best of 3 processes
            r = [min((self.scalebench("dns", n, b) for _ in range(3)), key=lambda x: x["refresh_us"]) for n in sizes]
            answer = answer or r
            cell = lambda x, k, n: f"{x[k + '_us']:,.0f} µs, {x[k + '_allocated_bytes']:,.0f} B ({x[k + '_allocated_bytes'] / n:,.1f} B/member)"
            lines.append(f"| {b} | refresh (in place) | " + " | ".join(cell(x, "refresh", n) for x, n in zip(r, sizes)) + " |")
            lines.append(f"| {b} | the pool built anew, for comparison | " + " | ".join(cell(x, "rebuild", n) for x, n in zip(r, sizes)) + " |")
            print(f"dns {b}: " + "; ".join(f"{n}: {x['refresh_us']:.0f} us / {x['rebuild_us']:.0f} us" for x, n in zip(r, sizes)), file=sys.stderr)
        lines.append("| any | the answer: sort check, compare, diff | " + " | ".join(
            f"{x['answer_us']:,.0f} µs, {x['answer_allocated_bytes']:,.0f} B" for x in answer) + " |")
        self.rows.append(("A DNS refresh where one member of the name left and another came: the watch's work on the "
                          "answer, then the control task's (`Snapshot::refresh_pool` and the new snapshot), in process", lines))

    def memory(self):
        lines = ["| balancer | bytes per server (10,000 servers) |", "|---|---:|"]
        for b in BALANCERS:
            m = self.scalebench("memory", b, 10_000)
            lines.append(f"| {b} | {m['bytes_per_server']:,.0f} |")
        self.rows.append(("Memory a snapshot holds per server, in process", lines))

    # ---------- end to end ----------
    def backend(self, n):
        """nginx answering on 127.1.x.y:19000 for n servers. Each process holds a
        listening socket and a connection per server it answers for: at most
        4,000 servers a process, so that a limit of 20,000 descriptors is never
        what the run measures (with 10,000 in one process, connections beyond the
        limit were refused, and round robin, which cycles through every server,
        reconnected on nearly every request)."""
        per = 4000
        for k, first in enumerate(range(0, n, per)):
            listens = "\n".join(f"    listen {server_addr(i)}:19000;" for i in range(first, min(n, first + per)))
            conf = self.write(f"backend{k}.conf", f"""
worker_processes 1;
daemon off;
pid {self.dir}/backend{k}.pid;
error_log {self.dir}/backend{k}.err;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections {NOFILE - 100}; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
{listens}
    location / {{ return 200 "hello\\n"; }}
  }}
}}
""")
            self.start("backend", ["nginx", "-c", conf], self.a.load_cpus)
        self.wait_port(server_addr(n - 1), 19000, "the backend")

    def rampart_config(self, pools, servers, balance="round_robin", routes=False, port=19103):
        out = [f"""[global]
threads = 1
access_log = "off"
max_connections = {NOFILE - 100}
[admin]
bind = "127.0.0.1:19404"
[[listener]]
name = "http"
bind = ["127.0.0.1:{port}"]
mode = "http"
pool = "p0"
request_header_timeout = "300s"
client_timeout = "300s"
"""]
        if routes:
            for p in range(pools):
                out.append(f'  [[listener.route]]\n  host = "h{p}.example.com"\n  pool = "p{p}"\n')
        k = 0
        for p in range(pools):
            out.append(f'[[pool]]\nname = "p{p}"\nbalance = "{balance}"\n')
            for _ in range(servers):
                out.append(f'  [[pool.server]]\n  address = "{server_addr(k)}:19000"\n')
                k += 1
        return "".join(out)

    def haproxy_config(self, pools, servers, balance="balance roundrobin", routes=False, port=19101):
        out = [f"""global
  nbthread 1
  maxconn {HAPROXY_MAXCONN}
  maxpipes 64
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 300s
frontend fe
  bind 127.0.0.1:{port}
  option http-keep-alive
"""]
        if routes:
            out.append(f"  use_backend %[req.hdr(host),lower,map({self.dir}/hosts.map,p0)]\n")
            self.write("hosts.map", "".join(f"h{p}.example.com p{p}\n" for p in range(pools)))
        out.append("  default_backend p0\n")
        k = 0
        for p in range(pools):
            out.append(f"backend p{p}\n  {balance}\n  http-reuse always\n")
            for s in range(servers):
                out.append(f"  server s{s} {server_addr(k)}:19000\n")
                k += 1
        return "".join(out)

    def cpu_ticks(self, name):
        """The proxy's user + system time so far, in clock ticks (from /proc)."""
        total = 0
        for pid in self.pids(name):
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        return total

    def size(self):
        """req/s and the proxy's CPU time per request (user + system, from
        /proc: the figure that moves less when the load generator's CPU is the
        limit), medians of `rounds` rounds; in each round every cell runs on a
        fresh proxy, and the proxy that goes first alternates."""
        sizes = self.a.sizes
        self.backend(max(sizes))
        tick = os.sysconf("SC_CLK_TCK")
        cells = {}  # (balancer, proxy, n) -> [(req/s, CPU µs a request)]
        rss = {}
        for r in range(self.a.rounds):
            for b, hb in self.balancers().items():
                for n in sizes:
                    for proxy in ("haproxy", "rampart") if r % 2 == 0 else ("rampart", "haproxy"):
                        if proxy == "rampart":
                            cfg = self.write("rampart.toml", self.rampart_config(1, n, b))
                            self.start(proxy, [self.a.rampart, "run", "-c", cfg], self.a.proxy_cpus)
                            port = 19103
                        else:
                            cfg = self.write("haproxy.cfg", self.haproxy_config(1, n, hb))
                            self.start(proxy, ["haproxy", "-db", "-f", cfg], self.a.proxy_cpus)
                            port = 19101
                        self.wait_port("127.0.0.1", port, proxy)
                        url = f"http://127.0.0.1:{port}/"
                        # warm up: connections to the servers are opened once
                        sh(f"taskset -c {self.a.load_cpus} wrk -t1 -c50 -d{self.a.warmup}s {url}")
                        cpu0 = self.cpu_ticks(proxy)
                        out = sh(f"taskset -c {self.a.load_cpus} wrk -t1 -c50 -d{self.a.duration}s {url}").stdout
                        cpu = (self.cpu_ticks(proxy) - cpu0) / tick
                        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
                        done = re.search(r"(\d+) requests in", out)
                        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                        rps = float(m.group(1)) if m and not bad else 0.0
                        us = cpu * 1e6 / int(done.group(1)) if done and rps else float("nan")
                        cells.setdefault((b, proxy, n), []).append((rps, us))
                        rss[(b, proxy, n)] = self.rss_kib(proxy)
                        conns = f", {self.backend_connects():,} backend connects" if proxy == "rampart" else ""
                        self.stop(proxy)
                        print(f"size round {r + 1} {b} {proxy} {n}: {rps:,.0f} req/s, {us:.1f} µs CPU a request, "
                              f"RSS {rss[(b, proxy, n)]:,} KiB{conns}", file=sys.stderr)
        self.stop("backend")
        med = lambda xs: sorted(xs)[len(xs) // 2]
        lines = ["| balancer | proxy | " + " | ".join(f"{n:,} servers" for n in sizes) + " |",
                 "|---|---|" + "---:|" * len(sizes)]
        for b in self.balancers():
            for proxy in ("haproxy", "rampart"):
                row = []
                for n in sizes:
                    xs = cells[(b, proxy, n)]
                    row.append(f"{med([x[0] for x in xs]):,.0f} ({med([x[1] for x in xs]):.1f} µs)")
                lines.append(f"| {b} | {proxy} | " + " | ".join(row) + " |")
        self.rows.append((f"HTTP/1.1 keep-alive req/s (wrk, 50 connections) through a pool of N servers, and "
                          f"(in brackets) the proxy's CPU time a request, user + system; medians of "
                          f"{self.a.rounds} round(s) of {self.a.duration} s", lines))
        lo, hi = min(sizes), max(sizes)
        if lo == hi:
            return
        mem = ["| balancer | HAProxy | rampart |", "|---|---:|---:|"]
        for b in self.balancers():
            per = {p: (rss[(b, p, hi)] - rss[(b, p, lo)]) * 1024 / (hi - lo) for p in ("haproxy", "rampart")}
            mem.append(f"| {b} | {per['haproxy']:,.0f} | {per['rampart']:,.0f} |")
        self.rows.append((f"RSS per server after that run, bytes: (RSS with {hi:,} servers - RSS with {lo:,}) / {hi - lo:,} "
                          "(it includes each server's connections to the backend; the last round's)", mem))

    def balancers(self):
        return {b: h for b, h in BALANCERS.items() if not self.a.balancers or b in self.a.balancers}

    def parked(self):
        """rampart's idle connections parked now."""
        with urllib.request.urlopen("http://127.0.0.1:19404/metrics", timeout=30) as r:
            m = re.search(r"^rampart_connections_parked (\d+)", r.read().decode(), re.M)
        return int(m.group(1)) if m else 0

    def backend_connects(self):
        """Connections rampart opened to servers since it started (warm-up included)."""
        with urllib.request.urlopen("http://127.0.0.1:19404/metrics", timeout=30) as r:
            text = r.read().decode()
        m = re.search(r"^rampart_backend_connect_seconds_count(?:\{[^}]*\})? (\d+)", text, re.M)
        return int(m.group(1)) if m else -1

    def admin(self, method, path):
        req = urllib.request.Request(f"http://127.0.0.1:19404{path}", method=method)
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"null")

    def pools(self):
        P, S = 1000, 10
        lines = ["| | HAProxy | rampart |", "|---|---:|---:|"]
        res = {}
        for proxy in ("haproxy", "rampart"):
            if proxy == "rampart":
                text = self.rampart_config(P, S, routes=True)
                cfg = self.write("rampart.toml", text)
                t0 = time.time()
                self.start(proxy, [self.a.rampart, "run", "-c", cfg], self.a.proxy_cpus)
                up = self.wait_port("127.0.0.1", 19404, "rampart's admin server")
                self.wait_port("127.0.0.1", 19103, proxy)
            else:
                cfg = self.write("haproxy.cfg", self.haproxy_config(P, S, routes=True))
                t0 = time.time()
                self.start(proxy, ["haproxy", "-db", "-f", cfg], self.a.proxy_cpus)
                up = self.wait_port("127.0.0.1", 19101, proxy)
            time.sleep(1.0)
            res[(proxy, "start")] = (up - t0) * 1000
            res[(proxy, "rss")] = self.rss_kib(proxy) / 1024
            if proxy == "rampart":
                # a reload that changes one server of one pool, then one that changes nothing
                times = []
                for k, edit in enumerate((True, False, True, False)):
                    if edit:
                        text = text.replace(f'"{server_addr(5 + k)}:19000"', f'"{server_addr(60000 + k)}:19000"', 1)
                        self.write("rampart.toml", text)
                    r = self.admin("POST", "/api/reload")
                    st = self.admin("GET", "/api/reload")
                    if not st["last_reload"]["ok"]:
                        sys.exit(f"reload failed: {st}")
                    times.append(st["last_reload"]["millis"])
                res[("rampart", "reload_one")] = min(times[0], times[2])
                res[("rampart", "reload_none")] = min(times[1], times[3])
                res[("rampart", "rss_after")] = self.rss_kib(proxy) / 1024
            self.stop(proxy)
        lines.append(f"| start-up until the listener accepts, ms | {res[('haproxy', 'start')]:,.0f} | {res[('rampart', 'start')]:,.0f} |")
        lines.append(f"| RSS after start, MiB | {res[('haproxy', 'rss')]:.1f} | {res[('rampart', 'rss')]:.1f} |")
        lines.append(f"| reload changing one server, ms (rampart's own figure) | - | {res[('rampart', 'reload_one')]:,.1f} |")
        lines.append(f"| reload changing nothing, ms | - | {res[('rampart', 'reload_none')]:,.1f} |")
        lines.append(f"| RSS after 4 reloads, MiB | - | {res[('rampart', 'rss_after')]:.1f} |")
        c = min((self.scalebench("config", P, S) for _ in range(3)), key=lambda x: x["parse_ms"])
        lines.append(f"| of a reload, in process: parse and check the config, ms | - | {c['parse_ms']:,.1f} |")
        lines.append(f"| of a reload, in process: build the next snapshot, ms | - | {c['rebuild_ms']:,.1f} |")
        self.rows.append((f"{P:,} pools x {S} servers behind {P:,} host routes (HAProxy: a map of the hosts)", lines))

    def idle(self):
        # each connection is a descriptor in the client and in the proxy (two in
        # HAProxy): the machine's limit may hold fewer than asked
        n = min(self.a.idle, NOFILE - 1000)
        counts = {"haproxy": min(n, HAPROXY_MAXCONN - 200), "nginx-proxy": n, "rampart": n}
        lines = ["| | HAProxy | nginx | rampart |", "|---|---:|---:|---:|",
                 "| idle connections held | " + " | ".join(f"{counts[c]:,}" for c in ("haproxy", "nginx-proxy", "rampart")) + " |"]
        self.backend(1)
        nginx_conf = self.write("nginx-proxy.conf", f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx-proxy.pid;
error_log {self.dir}/nginx-proxy.err;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections {NOFILE - 100}; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream be {{ server {server_addr(0)}:19000; keepalive 128; }}
  server {{
    listen 127.0.0.1:19102 backlog=4096;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
        res = {}
        for proxy, port in (("haproxy", 19101), ("nginx-proxy", 19102), ("rampart", 19103)):
            if proxy == "rampart":
                cfg = self.write("rampart.toml", self.rampart_config(1, 1))
                self.start(proxy, [self.a.rampart, "run", "-c", cfg], self.a.proxy_cpus)
            elif proxy == "haproxy":
                cfg = self.write("haproxy.cfg", self.haproxy_config(1, 1))
                self.start(proxy, ["haproxy", "-db", "-f", cfg], self.a.proxy_cpus)
            else:
                self.start(proxy, ["nginx", "-c", nginx_conf], self.a.proxy_cpus)
            self.wait_port("127.0.0.1", port, proxy)
            time.sleep(0.5)
            before = self.rss_kib(proxy)
            rates, after = asyncio.run(self.hold(port, counts[proxy], proxy))
            res[proxy] = (before, after, rates)
            print(f"idle {proxy}: {before} -> {after} KiB, rates {rates}", file=sys.stderr)
            self.stop(proxy)
        self.stop("backend")
        cols = ("haproxy", "nginx-proxy", "rampart")
        lines.append("| RSS holding them, MiB | " + " | ".join(f"{res[c][1] / 1024:,.1f}" for c in cols) + " |")
        lines.append("| bytes per idle connection | " + " | ".join(
            f"{(res[c][1] - res[c][0]) * 1024 / counts[c]:,.0f}" for c in cols) + " |")
        for k in range(len(res["rampart"][2])):
            lines.append(f"| accepted connections per second, tenth {k + 1} | " + " | ".join(
                f"{res[c][2][k]:,.0f}" for c in cols) + " |")
        note = "" if n == self.a.idle else f" (asked for {self.a.idle:,}: this machine allows {NOFILE:,} descriptors a process)"
        self.rows.append((f"Idle keep-alive connections on one thread, each after one request{note}", lines))

    async def hold(self, port, n, proxy):
        """Opens n connections (from 127.0.2.x, so that the client's ports last),
        each sends one request and reads its answer; returns the accept rate of
        each tenth (connections made and answered per second) and the RSS."""
        conns, rates = [], []
        tenth = max(1, n // 10)

        async def one(i):
            src = f"127.0.2.{1 + i % 200}"
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await r.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await r.readexactly(int(m.group(1)) if m else 0)
            return r, w

        for start in range(0, n, tenth):
            t0 = time.time()
            for batch in range(start, min(n, start + tenth), 500):
                conns += await asyncio.gather(*(one(i) for i in range(batch, min(n, start + tenth, batch + 500))))
            rates.append(min(tenth, n - start) / (time.time() - t0))
        await asyncio.sleep(1.0)
        if proxy == "rampart":
            # measured parked (park_idle_after, 1 s by default): once all are,
            # and the accept loop let go of their finished tasks (within 1 s)
            deadline = time.time() + 60
            while self.parked() < n and time.time() < deadline:
                await asyncio.sleep(0.1)
            if self.parked() < n:
                sys.exit(f"rampart parked {self.parked()} of {n} idle connections in 60 s")
            await asyncio.sleep(1.5)
        after = self.rss_kib(proxy)
        for _, w in conns:
            w.close()
        return rates, after


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--scalebench", required=True)
    ap.add_argument("--only", help="comma-separated parts: pick, routes, dns, memory, size, pools, idle")
    ap.add_argument("--quick", action="store_true", help="smaller: up to 1,000 servers, 10,000 idle, no callgrind")
    ap.add_argument("--sizes", dest="sizes_opt", help="comma-separated pool sizes for 'size' (default 10,100,1000,10000)")
    ap.add_argument("--balancers", help="comma-separated balancers for 'size' (default: all)")
    ap.add_argument("--rounds", type=int, help="rounds of 'size', medians reported (default 3, 1 with --quick)")
    ap.add_argument("--out")
    a = ap.parse_args()
    a.sizes = [10, 100, 1000] if a.quick else [10, 100, 1000, 10000]
    if a.sizes_opt:
        a.sizes = [int(x) for x in a.sizes_opt.split(",")]
    a.balancers = a.balancers.split(",") if a.balancers else None
    a.idle = 10_000 if a.quick else 100_000
    a.iters = 200_000 if a.quick else 1_000_000
    a.callgrind = not a.quick and shutil.which("valgrind") is not None
    a.warmup, a.duration = (1, 2) if a.quick else (3, 5)
    a.rounds = a.rounds or (1 if a.quick else 3)
    ncpu = os.cpu_count() or 2
    a.proxy_cpus = str(ncpu - 1)
    a.load_cpus = ",".join(str(c) for c in range(0, max(1, ncpu - 1)))
    raise_nofile()
    parts = a.only.split(",") if a.only else ["pick", "routes", "dns", "memory", "size", "pools", "idle"]
    s = Scale(a)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        for p in parts:
            print(f"== {p}", file=sys.stderr)
            getattr(s, p)()
    finally:
        s.stop_all()
    cmd = "bench/scale.sh " + " ".join(sys.argv[5:])
    text = [f"# How costs grow with the config\n\nRun {started:%Y-%m-%d %H:%M} UTC with `{cmd.strip()}`. "
            f"Proxies on CPU {a.proxy_cpus}, one thread each; wrk, clients and the backend on CPU(s) {a.load_cpus}. "
            f"In-process figures: examples/scalebench.rs, release build, one thread; instructions under callgrind as "
            f"(Ir(N2) - Ir(N1)) / (N2 - N1).\n"]
    for title, lines in s.rows:
        text.append(f"\n## {title}\n\n" + "\n".join(lines) + "\n")
    report = "".join(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report)
    print(report)


if __name__ == "__main__":
    main()
