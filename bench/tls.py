#!/usr/bin/env python3
"""TLS benchmarks behind bench/tls.sh: HAProxy (OpenSSL), nginx (OpenSSL) and rampart
(rustls) terminating TLS in front of the same plain nginx backend, each with the same
number of threads/workers, pinned to its own CPU(s), in the same run, interleaved,
medians reported. Standard library only; certificates made with the openssl CLI.

Rows:
  - new connection per request, full TLS 1.3 handshake, ECDSA P-256 and RSA-2048
    certificates: handshakes/s, and the proxy's CPU time per handshake (user+system
    from /proc, so the figure holds even where the load generator is the bottleneck);
  - the same with resumed sessions (tickets);
  - TLS keep-alive req/s and p99 (wrk over https);
  - TCP-mode TLS bulk transfer (TLS terminated by the proxy, plain to the backend): MB/s.

`--rampart-alt PATH` adds a second rampart build (e.g. built with aws-lc-rs) as one
more target, for comparing crypto providers in the same run.
"""
import argparse, datetime, json, os, re, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Bench, backend_config, sh, raise_nofile, med, fmt, ratio  # noqa: E402

# target -> (ecdsa https, rsa https, tcp tls)
PORTS = {
    "haproxy": (19111, 19121, 19211),
    "nginx": (19112, 19122, 19212),
    "rampart": (19113, 19123, 19213),
    "rampart-alt": (19114, 19124, 19214),
}
SNI = "bench.example.com"


class TlsBench(Bench):
    """bench.py's harness (processes, pinning, ports, clean-up) with TLS targets."""

    def __init__(self, a):
        super().__init__(a)
        self.targets = ["haproxy", "nginx", "rampart"] + (["rampart-alt"] if a.rampart_alt else [])

    def path(self, name):
        return os.path.join(self.dir, name)

    def certs(self):
        d = self.dir
        run = lambda c: subprocess.run(c, shell=True, cwd=d, check=True, capture_output=True)
        run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key")
        run("openssl req -x509 -new -key ca.key -subj '/CN=Bench CA' -days 30 -out ca.pem")
        with open(self.path("ext"), "w") as f:
            f.write(f"basicConstraints=CA:FALSE\nsubjectAltName=DNS:{SNI}\n")
        for kind, gen in [("ecdsa", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"),
                          ("rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048")]:
            run(f"openssl genpkey {gen} -out {kind}.key")
            run(f"openssl req -new -key {kind}.key -subj '/CN={SNI}' -out {kind}.csr")
            run(f"openssl x509 -req -in {kind}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile ext -out {kind}.crt")
            with open(self.path(f"{kind}.pem"), "w") as out:
                for part in (f"{kind}.crt", "ca.pem", f"{kind}.key"):
                    out.write(open(self.path(part)).read())
            with open(self.path(f"{kind}.chain"), "w") as out:
                for part in (f"{kind}.crt", "ca.pem"):
                    out.write(open(self.path(part)).read())

    def setup(self):
        self.certs()
        d, t = self.dir, self.a.threads
        www = self.path("www")
        os.makedirs(www)
        with open(os.path.join(www, "big"), "wb") as f:
            f.truncate(self.a.bulk_mib * 1024 * 1024)
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
  bind 127.0.0.1:19111 ssl crt {d}/ecdsa.pem alpn http/1.1
  bind 127.0.0.1:19121 ssl crt {d}/rsa.pem alpn http/1.1
  default_backend be
backend be
  mode http
  http-reuse always
  server s1 127.0.0.1:19000
frontend fe_tcp
  mode tcp
  bind 127.0.0.1:19211 ssl crt {d}/ecdsa.pem
  default_backend be_tcp
backend be_tcp
  mode tcp
  server s1 127.0.0.1:19000
""")
        nginx = self.write("nginx.conf", f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {t};
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx.err;
events {{ worker_connections 18000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  ssl_session_cache shared:SSL:10m;
  ssl_protocols TLSv1.2 TLSv1.3;
  upstream be {{ server 127.0.0.1:19000; keepalive 128; }}
  server {{
    listen 127.0.0.1:19112 ssl reuseport backlog=4096;
    ssl_certificate {d}/ecdsa.chain;
    ssl_certificate_key {d}/ecdsa.key;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:19122 ssl;
    ssl_certificate {d}/rsa.chain;
    ssl_certificate_key {d}/rsa.key;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
stream {{
  server {{
    listen 127.0.0.1:19212 ssl;
    ssl_certificate {d}/ecdsa.chain;
    ssl_certificate_key {d}/ecdsa.key;
    proxy_pass 127.0.0.1:19000;
  }}
}}
""")

        def rampart_cfg(name, ports, admin):
            e, r, tcp = ports
            return self.write(f"{name}.toml", f"""
[global]
threads = {t}
access_log = "off"
max_connections = 30000
[admin]
bind = "127.0.0.1:{admin}"
[[listener]]
name = "ecdsa"
bind = ["127.0.0.1:{e}"]
mode = "http"
pool = "be"
request_header_timeout = "60s"
  [listener.tls]
  cert = ["{d}/ecdsa.pem"]
  alpn = ["http/1.1"]
[[listener]]
name = "rsa"
bind = ["127.0.0.1:{r}"]
mode = "http"
pool = "be"
request_header_timeout = "60s"
  [listener.tls]
  cert = ["{d}/rsa.pem"]
  alpn = ["http/1.1"]
[[listener]]
name = "tcp"
bind = ["127.0.0.1:{tcp}"]
mode = "tcp"
pool = "be_tcp"
  [listener.tls]
  cert = ["{d}/ecdsa.pem"]
[[pool]]
name = "be"
# max_idle_per_server: the default (sized by demand; this config capped it
# at 128 until 2026-12-02, which at its concurrency changed nothing)
  [[pool.server]]
  address = "127.0.0.1:19000"
[[pool]]
name = "be_tcp"
server_timeout = "60s"
  [[pool.server]]
  address = "127.0.0.1:19000"
""")

        self.start("backend", ["nginx", "-c", backend], self.load_cpus)
        self.wait_port(19000, "the backend")
        self.start("haproxy", ["haproxy", "-db", "-f", haproxy], self.proxy_cpus)
        self.start("nginx", ["nginx", "-c", nginx], self.proxy_cpus)
        self.start("rampart", [self.a.rampart, "run", "-c", rampart_cfg("rampart", PORTS["rampart"], 19414)],
                   self.proxy_cpus)
        if self.a.rampart_alt:
            self.start("rampart-alt", [self.a.rampart_alt, "run", "-c",
                                       rampart_cfg("rampart-alt", PORTS["rampart-alt"], 19415)], self.proxy_cpus)
        for name in self.targets:
            for port in PORTS[name]:
                self.wait_port(port, name)
        for name in self.targets:
            out = sh(f"curl -sk -m 2 --resolve {SNI}:{PORTS[name][0]}:127.0.0.1 https://{SNI}:{PORTS[name][0]}/").stdout
            if out != "hello\n":
                sys.exit(f"{name} does not proxy the backend over TLS: {out!r}; logs in {self.dir}")

    def listen_ports(self, name):
        return PORTS[name]

    # ---------- measurements ----------
    def pids(self, name):
        if name == "nginx":
            pid = int(open(self.path("nginx.pid")).read())
            return [pid] + [int(x) for x in sh(f"pgrep -P {pid}").stdout.split()]
        pids = [p.pid for n, p in self.procs if n == name]
        return pids + [int(x) for p in pids for x in sh(f"pgrep -P {p}").stdout.split()]

    def cpu_seconds(self, name):
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids(name):
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def handshakes(self, name, port, resume):
        before = self.cpu_seconds(name)
        out = self.load(f"{self.a.tlsload} 127.0.0.1:{port} {SNI} {self.a.connections} {self.a.duration}"
                        + (" --resume" if resume else "")).stdout
        cpu = self.cpu_seconds(name) - before
        r = json.loads(out)
        n = r["requests"]
        res = {"rps": n / r["seconds"], "errors": r["errors"],
               "cpu_us": cpu * 1e6 / n if n else None,
               "resumed_pct": 100.0 * r["resumed"] / n if n else 0.0}
        return res

    def wrk(self, name, port):
        before = self.cpu_seconds(name)
        out = self.load(f"wrk -t1 -c{self.a.connections} -d{self.a.duration}s --latency "
                        f"https://127.0.0.1:{port}/").stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
        p99 = None
        if m:
            v = float(m.group(1))
            p99 = v / 1000 if m.group(2) == "us" else v if m.group(2) == "ms" else v * 1000
        total = re.search(r"(\d+) requests in", out)
        cpu = self.cpu_seconds(name) - before
        n = int(total.group(1)) if total else 0
        return {"rps": rps, "p99_ms": p99, "cpu_us": cpu * 1e6 / n if n else None}

    def bulk(self, port):
        out = self.load(f"curl -sk -o /dev/null -m 120 -w '%{{speed_download}} %{{size_download}}' "
                        f"https://127.0.0.1:{port}/big").stdout.split()
        size = int(float(out[1])) if len(out) > 1 else 0
        if size != self.a.bulk_mib * 1024 * 1024:
            return {"mbps": 0.0}
        return {"mbps": float(out[0]) / 1e6}

    def run(self):
        raise_nofile()
        self.setup()
        results = {}
        order = self.targets[:]
        for rnd in range(self.a.rounds):
            print(f"round {rnd + 1}/{self.a.rounds}", file=sys.stderr)
            for t in order:
                results.setdefault(("full_ecdsa", t), []).append(self.handshakes(t, PORTS[t][0], False))
            for t in order:
                results.setdefault(("full_rsa", t), []).append(self.handshakes(t, PORTS[t][1], False))
            for t in order:
                results.setdefault(("resumed", t), []).append(self.handshakes(t, PORTS[t][0], True))
            for t in order:
                results.setdefault(("keepalive", t), []).append(self.wrk(t, PORTS[t][0]))
            for t in order:
                results.setdefault(("bulk", t), []).append(self.bulk(PORTS[t][2]))
            order = order[1:] + order[:1]
        return results


def render(results, targets, a):
    rows = [
        ("full_ecdsa", "rps", "TLS 1.3 full handshake, ECDSA P-256: handshakes/s"),
        ("full_ecdsa", "cpu_us", "... proxy CPU per handshake, µs (lower is better)"),
        ("full_rsa", "rps", "TLS 1.3 full handshake, RSA-2048: handshakes/s"),
        ("full_rsa", "cpu_us", "... proxy CPU per handshake, µs (lower is better)"),
        ("resumed", "rps", "TLS 1.3 resumed handshake (ticket): handshakes/s"),
        ("resumed", "cpu_us", "... proxy CPU per handshake, µs (lower is better)"),
        ("resumed", "resumed_pct", "... share of handshakes resumed, %"),
        ("keepalive", "rps", "TLS keep-alive, req/s"),
        ("keepalive", "p99_ms", "TLS keep-alive, p99 ms (lower is better)"),
        ("keepalive", "cpu_us", "... proxy CPU per request, µs (lower is better)"),
        ("bulk", "mbps", f"TCP-mode TLS bulk ({a.bulk_mib} MiB), MB/s"),
    ]
    head = "| scenario | " + " | ".join(targets) + " | rampart/haproxy | rampart/nginx |"
    if "rampart-alt" in targets:
        head += " rampart-alt/rampart |"
    out = [head, "|---|" + "---:|" * (len(targets) + 2 + ("rampart-alt" in targets))]
    for sc, key, label in rows:
        vals = {t: med(results.get((sc, t), []), key) for t in targets}
        line = f"| {label} | " + " | ".join(fmt(vals[t]) for t in targets)
        line += f" | {ratio(vals['rampart'], vals['haproxy'])} | {ratio(vals['rampart'], vals['nginx'])} |"
        if "rampart-alt" in targets:
            line += f" {ratio(vals['rampart-alt'], vals['rampart'])} |"
        out.append(line)
    errors = {t: sum(r.get("errors", 0) for sc in ("full_ecdsa", "full_rsa", "resumed")
                     for r in results.get((sc, t), [])) for t in targets}
    return "\n".join(out), errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--rampart-alt")
    ap.add_argument("--alt-label", default="rampart-alt")
    ap.add_argument("--tlsload", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--out")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.duration = a.duration or (3 if a.quick else 10)
    a.bulk_mib = 256 if a.quick else 1024
    b = TlsBench(a)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        results = b.run()
    finally:
        b.stop_all()
    table, errors = render(results, b.targets, a)
    haproxy_v = sh("haproxy -v").stdout.splitlines()[0]
    nginx_v = sh("nginx -v").stderr.strip()
    openssl_v = sh("openssl version").stdout.strip()
    alt = f"\n`rampart-alt` is {a.alt_label} ({a.rampart_alt})." if a.rampart_alt else ""
    cmd = "bench/tls.sh" + (" --ring" if a.rampart_alt else "") + (" --quick" if a.quick else "")
    cmd += f" --out {a.out}" if a.out else ""
    report = f"""# TLS benchmark results

Run {started:%Y-%m-%d %H:%M} UTC with `{cmd}`: {a.rounds} round(s) of
{a.duration} s per scenario and target, interleaved, medians. Proxies: {a.threads} thread(s)/worker(s)
each, pinned to CPU(s) {b.proxy_cpus}; the load generators (examples/tlsload.rs, wrk, curl) and the
plain nginx backend on CPU(s) {b.load_cpus}. {a.connections} client connections. TLS 1.3 with X25519
everywhere (each side's default); the client does not verify certificates.{alt}

{table}

Handshake errors seen by the load generator: {errors}.

{haproxy_v}; {nginx_v}; {openssl_v}; rampart: rustls 0.23 ({sh(a.rampart + ' --version').stdout.strip()}).
"CPU per handshake" is the proxy's user+system time (from /proc) over the handshakes it completed:
it holds even when the load generator, not the proxy, is the bottleneck.
"""
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
