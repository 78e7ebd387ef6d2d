#!/usr/bin/env python3
"""HTTP/2 benchmarks behind bench/h2.sh: HAProxy, nginx and rampart side by side,
same threads/workers, pinned to their own CPU(s), same run, interleaved, medians.

Rows:
  - HTTP/2 over TLS (ALPN h2) from h2load, 10 streams per connection, to the plain
    HTTP/1.1 nginx backend of bench.py: req/s, and the proxy's CPU per request;
  - gRPC unary through the proxy (h2c from h2load with a gRPC body, 10 streams per
    connection) to examples/grpcecho.rs, a gRPC server over h2c: HAProxy with
    `proto h2` to the server, nginx with `grpc_pass`, rampart with
    `protocol = "h2"`: req/s and p99 (from h2load's per-request log), the
    proxy's CPU per request, and the gRPC server's and h2load's (they share
    the load's CPU, which limits the row; h2load's from RUSAGE_CHILDREN, which
    also counts the short `pgrep` runs that read the proxy's CPU: a few
    nanoseconds a call);
  - the same gRPC calls with HAProxy and nginx sending X-Forwarded-For, -Proto
    and -Host as rampart always does (`grpc_fwd`): the same work for the server.

Instructions per request (callgrind) for the HTTP/2-over-TLS row are in
bench/callgrind.sh. Standard library only; certificates from tls.py's harness.
"""
import argparse, datetime, os, re, resource, shutil, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import backend_config, sh, raise_nofile, med, fmt, ratio  # noqa: E402
from tls import TlsBench, SNI  # noqa: E402

# target -> (h2 over TLS, gRPC h2c, gRPC h2c with X-Forwarded-For/-Proto/-Host
# sent to the server as rampart always sends them: the same work)
PORTS = {
    "haproxy": (19311, 19321, 19331),
    "nginx": (19312, 19322, 19332),
    "rampart": (19313, 19323, 19323),
}
GRPC = 19700
# one gRPC message: uncompressed, 16 bytes of protobuf (field 1, 14 bytes)
GRPC_BODY = b"\x00\x00\x00\x00\x10\x0a\x0e" + b"rampart-bench!"


class H2Bench(TlsBench):
    def __init__(self, a):
        super().__init__(a)
        self.targets = ["haproxy", "nginx", "rampart"]

    def setup(self):
        self.certs()
        d, t = self.dir, self.a.threads
        www = self.path("www")
        os.makedirs(www)
        with open(self.path("grpc.body"), "wb") as f:
            f.write(GRPC_BODY)
        backend = self.write("backend.conf", backend_config(d, www))
        haproxy = self.write("haproxy.cfg", f"""
global
  nbthread {t}
  maxconn {self.maxconn}
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe_h2
  bind 127.0.0.1:19311 ssl crt {d}/ecdsa.pem alpn h2
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:19000
frontend fe_grpc
  bind 127.0.0.1:19321 proto h2
  default_backend be_grpc
frontend fe_grpc_fwd
  bind 127.0.0.1:19331 proto h2
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be_grpc
backend be_grpc
  http-reuse always
  server s1 127.0.0.1:{GRPC} proto h2
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
  http2_max_concurrent_streams 128;
  upstream be {{ server 127.0.0.1:19000; keepalive 128; }}
  upstream grpcbe {{ server 127.0.0.1:{GRPC}; keepalive 128; }}
  server {{
    listen 127.0.0.1:19312 ssl http2 reuseport backlog=4096;
    ssl_certificate {d}/ecdsa.chain;
    ssl_certificate_key {d}/ecdsa.key;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:19322 http2;
    location / {{ grpc_pass grpc://grpcbe; }}
  }}
  server {{
    listen 127.0.0.1:19332 http2;
    location / {{
      grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      grpc_set_header X-Forwarded-Proto $scheme;
      grpc_set_header X-Forwarded-Host $host:$server_port;
      grpc_pass grpc://grpcbe;
    }}
  }}
}}
""")
        rampart = self.write("rampart.toml", f"""
[global]
threads = {t}
access_log = "off"
max_connections = 30000
[admin]
bind = "127.0.0.1:19414"
[[listener]]
name = "h2tls"
bind = ["127.0.0.1:19313"]
mode = "http"
pool = "be"
  [listener.tls]
  cert = ["{d}/ecdsa.pem"]
  alpn = ["h2"]
[[listener]]
name = "grpc"
bind = ["127.0.0.1:19323"]
mode = "http"
pool = "grpc"
[[pool]]
name = "be"
# max_idle_per_server: the default (the server's peak of concurrent requests);
# a cap of 128 under 200 concurrent streams churned backend connections
  [[pool.server]]
  address = "127.0.0.1:19000"
[[pool]]
name = "grpc"
protocol = "h2"
  [[pool.server]]
  address = "127.0.0.1:{GRPC}"
""")
        self.start("backend", ["nginx", "-c", backend], self.load_cpus)
        self.start("grpcecho", [self.a.grpcecho, f"127.0.0.1:{GRPC}", "1"], self.load_cpus)
        self.wait_port(19000, "the backend")
        self.wait_port(GRPC, "the gRPC server")
        self.start("haproxy", ["haproxy", "-db", "-f", haproxy], self.proxy_cpus)
        self.start("nginx", ["nginx", "-c", nginx], self.proxy_cpus)
        self.start("rampart", [self.a.rampart, "run", "-c", rampart], self.proxy_cpus)
        for name in self.targets:
            for port in PORTS[name]:
                self.wait_port(port, name)
        # (a port that answers is this run's process's: one left running on
        # it would otherwise be measured in its place)
        for name, p in self.procs:
            if p.poll() is not None:
                sys.exit(f"{name} exited (a port of its taken?); logs in {self.dir}")
        for name in self.targets:
            out = sh(f"curl -sk --http2 -m 2 -w ' %{{http_version}}' --resolve {SNI}:{PORTS[name][0]}:127.0.0.1 "
                     f"https://{SNI}:{PORTS[name][0]}/").stdout
            if out != "hello\n 2":
                sys.exit(f"{name} does not proxy h2 over TLS: {out!r}; logs in {self.dir}")
            self.grpc_sanity(name, PORTS[name][1])
            self.grpc_sanity(name, PORTS[name][2])

    def grpc_sanity(self, name, port):
        """A real gRPC call through the proxy (grpcio, when installed): the echo
        and grpc-status 0 must come back, or the row would measure errors."""
        py = "/usr/bin/python3"
        if subprocess.run([py, "-c", "import grpc"], capture_output=True).returncode != 0:
            print(f"(python3-grpcio not installed: {name}'s gRPC path checked by h2load only)",
                  file=sys.stderr)
            return
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "h2", "grpc_call.py")
        body = GRPC_BODY[5:].hex()
        out = sh(f"{py} {script} 127.0.0.1:{port} /bench.Echo/Call --body {body}").stdout
        if '"code": "OK"' not in out or "rampart-bench!" not in out:
            sys.exit(f"{name} does not proxy gRPC: {out!r}; logs in {self.dir}")

    def h2load(self, name, args, server=None):
        """One h2load run through proxy `name`; with `server`, that process's
        CPU a request too (the gRPC server's, on the load's CPU), and h2load's."""
        before = self.cpu_seconds(name)
        server_before = self.cpu_seconds(server) if server else 0.0
        load_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = self.path(f"h2load.{name}.log")
        if os.path.exists(log):
            os.remove(log)
        out = self.load(f"h2load -t 1 -c {self.a.connections} -m 10 -D {self.a.duration} "
                        f"--log-file {log} {args}").stdout
        cpu = self.cpu_seconds(name) - before
        server_cpu = self.cpu_seconds(server) - server_before if server else 0.0
        load_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_cpu = (load_after.ru_utime + load_after.ru_stime
                    - load_before.ru_utime - load_before.ru_stime)
        m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        rps = float(m.group(1)) if m else 0.0
        st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        ok = int(st.group(1)) if st else 0
        bad = sum(int(x) for x in st.groups()[1:]) if st else 0
        errs = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored", out)
        errors = bad + (int(errs.group(1)) + int(errs.group(2)) if errs else 0)
        lat = []
        with open(log) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    lat.append(int(parts[2]))
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else None
        per = lambda t: t * 1e6 / ok if ok else None
        r = {"rps": rps, "p99_ms": p99, "errors": errors, "cpu_us": per(cpu)}
        if server:
            r["server_cpu_us"] = per(server_cpu)
            r["load_cpu_us"] = per(load_cpu)
        return r

    def run(self):
        raise_nofile()
        self.setup()
        results = {}
        order = self.targets[:]
        for rnd in range(self.a.rounds):
            print(f"round {rnd + 1}/{self.a.rounds}", file=sys.stderr)
            for t in order if self.a.only in (None, "h2tls") else []:
                results.setdefault(("h2tls", t), []).append(
                    self.h2load(t, f"https://127.0.0.1:{PORTS[t][0]}/"))
            for sc, port in (("grpc", 1), ("grpc_fwd", 2)):
                for t in order if self.a.only in (None, "grpc") else []:
                    results.setdefault((sc, t), []).append(self.h2load(
                        t, f"-d {self.path('grpc.body')} -H 'content-type: application/grpc' "
                           f"-H 'te: trailers' http://127.0.0.1:{PORTS[t][port]}/bench.Echo/Call",
                        server="grpcecho"))
            order = order[1:] + order[:1]
        return results


def render(results, targets):
    rows = [
        ("h2tls", "rps", "HTTP/2 over TLS (h2load, 10 streams/connection): req/s"),
        ("h2tls", "p99_ms", "... p99 ms (lower is better)"),
        ("h2tls", "cpu_us", "... proxy CPU per request, µs (lower is better)"),
        ("grpc", "rps", "gRPC unary, h2c both sides (10 streams/connection): req/s"),
        ("grpc", "p99_ms", "... p99 ms (lower is better)"),
        ("grpc", "cpu_us", "... proxy CPU per request, µs (lower is better)"),
        ("grpc", "server_cpu_us", "... the gRPC server's CPU per request, µs (on the load's CPU)"),
        ("grpc", "load_cpu_us", "... h2load's CPU per request, µs (on the load's CPU)"),
        ("grpc_fwd", "rps", "gRPC unary, HAProxy and nginx sending X-Forwarded-For/-Proto/-Host as rampart does: req/s"),
        ("grpc_fwd", "p99_ms", "... p99 ms (lower is better)"),
        ("grpc_fwd", "cpu_us", "... proxy CPU per request, µs (lower is better)"),
        ("grpc_fwd", "server_cpu_us", "... the gRPC server's CPU per request, µs (on the load's CPU)"),
        ("grpc_fwd", "load_cpu_us", "... h2load's CPU per request, µs (on the load's CPU)"),
    ]
    out = ["| scenario | " + " | ".join(targets) + " | rampart/haproxy | rampart/nginx |",
           "|---|" + "---:|" * (len(targets) + 2)]
    for sc, key, label in rows:
        vals = {t: med(results.get((sc, t), []), key) for t in targets}
        out.append(f"| {label} | " + " | ".join(fmt(vals[t]) for t in targets)
                   + f" | {ratio(vals['rampart'], vals['haproxy'])} | {ratio(vals['rampart'], vals['nginx'])} |")
    errors = {t: sum(r["errors"] for sc in ("h2tls", "grpc", "grpc_fwd") for r in results.get((sc, t), []))
              for t in targets}
    return "\n".join(out), errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--grpcecho", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--only", choices=["h2tls", "grpc"], help="one scenario's rows")
    ap.add_argument("--out")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.duration = a.duration or (3 if a.quick else 10)
    a.rampart_alt = None
    if not shutil.which("h2load"):
        sys.exit("h2load not found (apt: nghttp2-client)")
    b = H2Bench(a)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        results = b.run()
    finally:
        b.stop_all()
    table, errors = render(results, b.targets)
    cmd = ("bench/h2.sh" + (" --quick" if a.quick else "") + (f" --only {a.only}" if a.only else "")
           + (f" --out {a.out}" if a.out else ""))
    report = f"""# HTTP/2 and gRPC benchmark results

Run {started:%Y-%m-%d %H:%M} UTC with `{cmd}`: {a.rounds} round(s) of {a.duration} s per
scenario and target, interleaved, medians. Proxies: {a.threads} thread(s)/worker(s) each, pinned
to CPU(s) {b.proxy_cpus}; h2load (1 thread, {a.connections} connections x 10 streams), the plain
nginx backend and the gRPC server (examples/grpcecho.rs) on CPU(s) {b.load_cpus}. TLS 1.3,
ECDSA P-256, ALPN h2.

{table}

Failed or non-2xx requests seen by h2load: {errors}.

{sh("haproxy -v").stdout.splitlines()[0]}; {sh("nginx -v").stderr.strip()}; {sh("h2load --version").stdout.strip()};
rampart: {sh(a.rampart + ' --version').stdout.strip()}. p99 is over every request h2load logged
(`--log-file`). "CPU per request" is the proxy's user+system time (from /proc) over the 2xx
answers. Instructions per request: bench/callgrind.sh.
"""
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
