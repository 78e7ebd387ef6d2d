#!/usr/bin/env python3
"""Reload benchmarks (bench/reload.sh). Standard library only.

1. Time from trigger to new generation live: `POST /api/reload` answers once the
   new snapshot is stored and every listener, health check and DNS watch is
   reconciled; measured as the call's wall time and as the proxy's own figure
   (`millis`), for 10 pools x 10 servers and 1,000 pools x 10 servers.
2. HTTP/1.1 keep-alive latency while the config is reloaded every second, against
   the same with no reload, for rampart (`POST /api/reload`) and HAProxy
   (`haproxy -sf`: a new process takes the listening sockets with -x, the old
   one finishes its connections), in the same run, interleaved.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Bench, sh, raise_nofile  # noqa: E402

ADMIN = "127.0.0.1:19405"
RAMPART_PORT = 19113
HAPROXY_PORT = 19111


def rampart_config(pools, variant):
    """`pools` pools of 10 servers each (loopback addresses nothing listens on, no
    health checks: nothing is sent to them), plus pool "be", the real backend.
    Variants differ in one server's weight."""
    out = [f"""[global]
threads = 1
access_log = "off"
max_connections = 30000
[admin]
bind = "{ADMIN}"
[[listener]]
name = "http"
bind = ["127.0.0.1:{RAMPART_PORT}"]
mode = "http"
pool = "be"
request_header_timeout = "60s"
[[pool]]
name = "be"
# max_idle_per_server: the default (sized by demand; this config capped it
# at 128 until 2026-12-02, which at its concurrency changed nothing)
  [[pool.server]]
  address = "127.0.0.1:19000"
  weight = {1 + variant}
"""]
    for p in range(pools):
        out.append(f'[[pool]]\nname = "p{p}"\n')
        for s in range(10):
            out.append(f'  [[pool.server]]\n  address = "127.0.{1 + p // 200}.{1 + s}:{20000 + p % 200}"\n')
    return "".join(out)


def haproxy_config(d, variant):
    return f"""
global
  nbthread 1
  maxconn 5000
  stats socket {d}/haproxy.sock mode 600 expose-fd listeners level admin
  pidfile {d}/haproxy.pid
defaults
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  mode http
  option http-keep-alive
  bind 127.0.0.1:{HAPROXY_PORT}
  default_backend be
backend be
  mode http
  http-reuse always
  server s1 127.0.0.1:19000 weight {1 + variant}
"""


def post(path):
    req = urllib.request.Request(f"http://{ADMIN}{path}", method="POST", data=b"")
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
    return (time.perf_counter() - t0) * 1000, body


class Reloads:
    def __init__(self, b, args):
        self.b = b
        self.a = args
        self.d = b.dir
        self.cfg = os.path.join(self.d, "reload.toml")
        self.hcfg = os.path.join(self.d, "haproxy-reload.cfg")

    def start_rampart(self, pools):
        with open(self.cfg, "w") as f:
            f.write(rampart_config(pools, 0))
        p = self.b.start("rampart-reload", [self.a.rampart, "run", "-c", self.cfg], self.b.proxy_cpus)
        self.b.wait_port(RAMPART_PORT, "rampart")
        self.b.wait_port(int(ADMIN.split(":")[1]), "rampart admin")
        return p

    def stop(self, p):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        self.b.procs = [x for x in self.b.procs if x[1] is not p]

    def reload_rampart(self, pools, variant):
        with open(self.cfg, "w") as f:
            f.write(rampart_config(pools, variant))
        ms, body = post("/api/reload")
        if not body.get("ok"):
            sys.exit(f"reload failed: {body}")
        return ms, body["millis"]

    def time_to_live(self, pools, n):
        p = self.start_rampart(pools)
        walls, inside = [], []
        for i in range(n):
            w, m = self.reload_rampart(pools, (i + 1) % 2)
            walls.append(w)
            inside.append(m)
        self.stop(p)
        return walls, inside

    # --- HAProxy, reloaded the way its systemd unit does: a new process with -x
    #     (takes the listening sockets over the stats socket) and -sf (the old one
    #     finishes its connections and exits).
    def start_haproxy(self):
        with open(self.hcfg, "w") as f:
            f.write(haproxy_config(self.d, 0))
        sh(f"taskset -c {self.b.proxy_cpus} haproxy -D -f {self.hcfg}")
        self.b.wait_port(HAPROXY_PORT, "haproxy")

    def reload_haproxy(self, variant):
        with open(self.hcfg, "w") as f:
            f.write(haproxy_config(self.d, variant))
        pid = open(os.path.join(self.d, "haproxy.pid")).read().split()
        r = sh(f"taskset -c {self.b.proxy_cpus} haproxy -D -f {self.hcfg} "
               f"-x {self.d}/haproxy.sock -sf {' '.join(pid)}")
        if r.returncode != 0:
            sys.exit(f"haproxy reload failed: {r.stderr}")

    def stop_haproxy(self):
        for pid in sh("pidof haproxy").stdout.split():
            cmd = open(f"/proc/{pid}/cmdline").read() if os.path.exists(f"/proc/{pid}/cmdline") else ""
            if self.hcfg in cmd:
                os.kill(int(pid), signal.SIGKILL)

    def wrk(self, port, reload_fn):
        """wrk for the run's duration; with `reload_fn`, called every second."""
        stop = threading.Event()
        count = [0]

        def loop():
            v = 0
            while not stop.wait(1.0):
                v = 1 - v
                reload_fn(v)
                count[0] += 1

        t = None
        if reload_fn:
            t = threading.Thread(target=loop)
            t.start()
        r = self.b.wrk(port)
        stop.set()
        if t:
            t.join()
        r["reloads"] = count[0]
        return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--reloads", type=int, default=20, help="reloads timed per pool count")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.reloads = 1, 3, 5
    args.threads = 1
    args.bulk_mib = 1
    b = Bench(args)
    r = Reloads(b, args)
    rows = []
    try:
        b.start("backend", ["nginx", "-c", b.write("backend.conf", BACKEND.format(d=b.dir))], b.load_cpus)
        b.wait_port(19000, "the backend")
        ttl = {}
        for pools in (10, 1000):
            walls, inside = r.time_to_live(pools, args.reloads)
            ttl[pools] = (walls, inside)
        # keep-alive latency, steady vs a reload every second, interleaved
        res = {}
        rp = r.start_rampart(10)
        r.start_haproxy()
        for rnd in range(args.rounds):
            order = [("rampart", False), ("rampart", True), ("haproxy", False), ("haproxy", True)]
            order = order[rnd % 4:] + order[:rnd % 4]
            for name, reloading in order:
                if name == "rampart":
                    fn = (lambda v: r.reload_rampart(10, v)) if reloading else None
                    out = r.wrk(RAMPART_PORT, fn)
                else:
                    fn = (lambda v: r.reload_haproxy(v)) if reloading else None
                    out = r.wrk(HAPROXY_PORT, fn)
                res.setdefault((name, reloading), []).append(out)
        r.stop(rp)
        r.stop_haproxy()
    finally:
        r.stop_haproxy()
        b.stop_all()

    def med(xs):
        return statistics.median(xs)

    def p90(xs):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * 0.9))]

    lines = []
    lines.append(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
                 f"`bench/reload.sh{' --quick' if args.quick else ''}`.\n")
    lines.append("Time from `POST /api/reload` to the new generation live (the call returns then), "
                 f"{args.reloads} reloads each:\n")
    lines.append("| config | wall ms, median | wall ms, p90 | in-process ms, median | in-process ms, p90 |")
    lines.append("|---|---:|---:|---:|---:|")
    for pools, (walls, inside) in ttl.items():
        lines.append(f"| {pools} pools x 10 servers | {med(walls):.1f} | {p90(walls):.1f} | "
                     f"{med(inside):.1f} | {p90(inside):.1f} |")
    lines.append("")
    lines.append(f"HTTP/1.1 keep-alive, {args.connections} connections, 1 thread each, "
                 f"{args.rounds} round(s) of {args.duration} s, medians; \"reloading\" = a reload every second "
                 "(rampart: `POST /api/reload`; HAProxy: `haproxy -D -x <stats socket> -sf <old pids>`, "
                 "as its systemd unit does):\n")
    lines.append("| proxy | reloads | req/s | p50 ms | p99 ms | non-2xx | socket errors |")
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for name in ("haproxy", "rampart"):
        for reloading in (False, True):
            rs = res[(name, reloading)]
            lines.append(
                f"| {name}{' reloading' if reloading else ''} | {sum(x['reloads'] for x in rs)} | "
                f"{med([x['rps'] for x in rs]):,.0f} | {med([x['p50_ms'] for x in rs]):.2f} | "
                f"{med([x['p99_ms'] for x in rs]):.2f} | {sum(x['non2xx'] for x in rs)} | "
                f"{'; '.join(x['sockerr'] for x in rs if x['sockerr']) or '-'} |")
    for name in ("haproxy", "rampart"):
        s = med([x['p99_ms'] for x in res[(name, False)]])
        rl = med([x['p99_ms'] for x in res[(name, True)]])
        lines.append(f"\n{name}: p99 while reloading / steady = {rl / s:.2f}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Reload benchmarks\n\n" + text)


BACKEND = """
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
  server {{
    listen 127.0.0.1:19000 reuseport backlog=4096;
    location = / {{ return 200 "hello\\n"; }}
  }}
}}
"""

if __name__ == "__main__":
    main()
