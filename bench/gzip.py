#!/usr/bin/env python3
"""Compression side by side (bench/gzip.sh): HAProxy (`compression algo gzip`),
nginx (`gzip on`) and rampart (`[listener.compression]`), each at zlib level 1
(all three's default), in front of the same plain nginx backend serving a
16 KiB text answer, each with the same number of threads/workers, pinned to
its own CPU(s), in the same run, interleaved, medians reported. Standard
library only.

Rows (wrk, keep-alive, 50 connections):
  - the answer gzipped (`Accept-Encoding: gzip`): req/s, the proxy's CPU per
    request (user + system from /proc), and the bytes of one answer (what each
    proxy's compressor makes of it);
  - the same listener for a client that does not take gzip: req/s and CPU
    (rampart sends these through hyper's path, not the fast path).
"""
import argparse, datetime, os, random, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Bench, backend_config, sh, raise_nofile, med, fmt, ratio  # noqa: E402

PORTS = {"haproxy": 19131, "nginx": 19132, "rampart": 19133}
TARGETS = ["haproxy", "nginx", "rampart"]
PAGE = "f/page.txt"


def page():
    """16 KiB of JSON-like text (words drawn from a fixed seed): compressible
    as an API's answer is, not a single repeated string."""
    rng = random.Random(17)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
             "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]
    out = []
    n = 0
    while n < 16 * 1024:
        item = '{"id": %d, "name": "%s %s", "score": %d, "tags": ["%s", "%s"]},\n' % (
            n, rng.choice(words), rng.choice(words), rng.randint(0, 99999),
            rng.choice(words), rng.choice(words))
        out.append(item)
        n += len(item)
    return "".join(out)[: 16 * 1024]


class GzipBench(Bench):
    """bench.py's harness (processes, pinning, ports, clean-up) with
    compressing targets."""

    def listen_ports(self, name):
        return (PORTS[name],)

    def setup(self):
        d, t = self.dir, self.a.threads
        www = os.path.join(d, "www")
        os.makedirs(os.path.join(www, "f"))
        with open(os.path.join(www, PAGE), "w") as f:
            f.write(page())
        backend = self.write("backend.conf", backend_config(d, www))
        haproxy = self.write("haproxy.cfg", f"""
global
  nbthread {t}
  maxconn {self.maxconn}
defaults
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  mode http
  option http-keep-alive
  bind 127.0.0.1:{PORTS["haproxy"]}
  compression algo gzip
  compression type text/plain
  default_backend be
backend be
  mode http
  http-reuse always
  server s1 127.0.0.1:19000
""")
        nginx = self.write("nginx.conf", f"""
worker_processes {t};
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx.err;
events {{ worker_connections 18000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  gzip on;
  gzip_types text/plain;
  gzip_proxied any;
  upstream be {{ server 127.0.0.1:19000; keepalive 128; }}
  server {{
    listen 127.0.0.1:{PORTS["nginx"]} reuseport backlog=4096;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
        rampart = self.write("rampart.toml", f"""
[global]
threads = {t}
access_log = "off"
max_connections = 30000
[admin]
bind = "127.0.0.1:19434"
[[listener]]
name = "http"
bind = ["127.0.0.1:{PORTS["rampart"]}"]
mode = "http"
pool = "be"
request_header_timeout = "60s"
compression = {{ types = ["text/plain"] }}
[[pool]]
name = "be"
  [[pool.server]]
  address = "127.0.0.1:19000"
""")
        self.start("backend", ["nginx", "-c", backend], self.load_cpus)
        self.wait_port(19000, "the backend")
        self.start("haproxy", ["haproxy", "-db", "-f", haproxy], self.proxy_cpus)
        self.start("nginx", ["nginx", "-c", nginx], self.proxy_cpus)
        self.start("rampart", [self.a.rampart, "run", "-c", rampart], self.proxy_cpus)
        for name in TARGETS:
            self.wait_port(PORTS[name], name)
        plain = len(page())
        for name in TARGETS:
            url = f"http://127.0.0.1:{PORTS[name]}/{PAGE}"
            out = sh(f"curl -s -m 2 --compressed -o /dev/null -w '%{{size_download}}' {url}").stdout
            whole = sh(f"curl -s -m 2 --compressed {url}").stdout
            if not out or int(out) >= plain or len(whole) != plain:
                sys.exit(f"{name} does not gzip the page ({out} bytes); logs in {self.dir}")

    def answer_bytes(self, name):
        url = f"http://127.0.0.1:{PORTS[name]}/{PAGE}"
        out = sh(f"curl -s -m 2 -H 'Accept-Encoding: gzip' -o /dev/null -w '%{{size_download}}' {url}").stdout
        return float(out or 0)

    def measure(self, name, gzip):
        extra = "-H 'Accept-Encoding: gzip'" if gzip else ""
        return self.with_cpu(name, lambda: self.wrk(PORTS[name], extra, PAGE))

    def run(self):
        raise_nofile()
        self.setup()
        results = {}
        order = TARGETS[:]
        for rnd in range(self.a.rounds):
            print(f"round {rnd + 1}/{self.a.rounds}", file=sys.stderr)
            for t in order:
                r = self.measure(t, True)
                r["bytes"] = self.answer_bytes(t)
                results.setdefault(("gzip", t), []).append(r)
            for t in order:
                results.setdefault(("plain", t), []).append(self.measure(t, False))
            order = order[1:] + order[:1]
        return results


def render(results):
    rows = [
        ("gzip", "rps", "16 KiB text answer gzipped (level 1), keep-alive, req/s"),
        ("gzip", "cpu_us", "... the proxy's CPU µs per request (lower is better)"),
        ("gzip", "bytes", "... bytes of one gzipped answer (lower is better)"),
        ("plain", "rps", "the same listener, a client without gzip, req/s"),
        ("plain", "cpu_us", "... the proxy's CPU µs per request (lower is better)"),
    ]
    out = ["| scenario | haproxy | nginx | rampart | rampart/haproxy | rampart/nginx |",
           "|---|---:|---:|---:|---:|---:|"]
    for sc, key, label in rows:
        vals = {t: med(results.get((sc, t), []), key) for t in TARGETS}
        lower = key != "rps"
        out.append(f"| {label} | " + " | ".join(fmt(vals[t]) for t in TARGETS)
                   + f" | {ratio(vals['rampart'], vals['haproxy'], lower)}"
                   + f" | {ratio(vals['rampart'], vals['nginx'], lower)} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--out")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.duration = a.duration or (3 if a.quick else 10)
    a.bulk_mib = 1
    b = GzipBench(a)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        results = b.run()
    finally:
        b.stop_all()
    table = render(results)
    cmd = "bench/gzip.sh" + (" --quick" if a.quick else "") + (f" --out {a.out}" if a.out else "")
    report = f"""# Compression benchmark results

Run {started:%Y-%m-%d %H:%M} UTC with `{cmd}`: {a.rounds} round(s) of {a.duration} s per
scenario and target, interleaved, medians. Proxies: {a.threads} thread(s)/worker(s) each, pinned
to CPU(s) {b.proxy_cpus}; wrk, curl and the plain nginx backend on CPU(s) {b.load_cpus}.
{a.connections} client connections. Each proxy gzips `text/plain` at zlib level 1, its default:
HAProxy `compression algo gzip`, nginx `gzip on` (`gzip_proxied any`), rampart
`compression = {{ types = ["text/plain"] }}` (zlib-rs, flushed after each part the server
sends). Ratios above 1.00 favour rampart for req/s, below 1.00 for CPU and bytes.

{table}

{sh("haproxy -v").stdout.splitlines()[0]}; {sh("nginx -v").stderr.strip()}; {sh(a.rampart + " --version").stdout.strip()}.
"""
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
