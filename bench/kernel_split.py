#!/usr/bin/env python3
"""Where a request's CPU goes, by proxy: user and system time per request, and
the TCP segments, pure ACKs and delayed ACKs the whole machine sent per request
(nstat; loopback: both ends of every connection), for keep-alive requests of one
path. The proxies run with bench.py's configs, pinned as there; the backend
also serves /f/<size> (random bytes: 1 KiB to 256 KiB) and answers POSTs on /.
Each proxy in turn: `h2load --h1 -c 50` warms up with 2,000 requests, then N
are counted; medians of the rounds.

    python3 bench/kernel_split.py target/release/rampart /f/16384
    python3 bench/kernel_split.py target/release/rampart / --n 30000 --post 1024

The figure that found the 16 KiB answers' extra segment (bench/RESULTS.md,
"Short request bodies on the fast path; a response's head with its body").
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

SIZES = (1024, 4096, 16384, 65536, 262144)


def tree(pid):
    """pid and its children (nginx's workers)."""
    out = [pid]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out


def cpu(pid):
    """(user, system) seconds of pid and its children."""
    u = s = 0
    tick = os.sysconf("SC_CLK_TCK")
    for p in tree(pid):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        u += int(fields[11])
        s += int(fields[12])
    return u / tick, s / tick


def nstat():
    out = subprocess.run("nstat -az TcpOutSegs TcpExtTCPPureAcks TcpExtDelayedACKs",
                         shell=True, capture_output=True, text=True).stdout
    return {ln.split()[0]: int(ln.split()[1]) for ln in out.splitlines()[1:] if ln.strip()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rampart")
    ap.add_argument("path", help="e.g. /f/16384 or /")
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--post", type=int, default=0, help="a POST body of this many bytes")
    a = ap.parse_args()
    b = bench.Bench(bench.tool_args(a.rampart))
    rows = {}
    try:
        bench.raise_nofile()
        b.setup()
        www = os.path.join(b.dir, "www", "f")
        os.makedirs(www, exist_ok=True)
        for size in SIZES:
            with open(os.path.join(www, str(size)), "wb") as f:
                f.write(os.urandom(size))
        extra = ""
        if a.post:
            body = b.write("post.bin", "x" * a.post)
            extra = f"-d {body}"
        pids = {name: p.pid for name, p in b.procs if name in bench.PROXIES}
        for _ in range(a.rounds):
            for name in bench.PROXIES:
                url = f"http://127.0.0.1:{bench.PORTS[name][0]}{a.path}"
                b.load(f"h2load --h1 -n 2000 -c 50 -t1 {extra} {url}")
                n0, c0, t0 = nstat(), cpu(pids[name]), time.time()
                out = b.load(f"h2load --h1 -n {a.n} -c 50 -t1 {extra} {url}").stdout
                t1, c1, n1 = time.time(), cpu(pids[name]), nstat()
                ok = re.search(r"(\d+) succeeded", out)
                if not ok or int(ok.group(1)) != a.n:
                    sys.exit(f"{name}: not every request succeeded:\n{out}")
                r = {k: (n1[k] - n0[k]) / a.n for k in n0}
                r.update(rps=a.n / (t1 - t0), user=(c1[0] - c0[0]) * 1e6 / a.n,
                         sys=(c1[1] - c0[1]) * 1e6 / a.n)
                rows.setdefault(name, []).append(r)
    finally:
        b.stop_all()
    print(f"{a.path}{f' (POST {a.post} B)' if a.post else ''}, {a.n} requests, median of {a.rounds}:")
    print("| proxy | req/s | user µs | system µs | segments | pure ACKs | delayed ACKs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rs in rows.items():
        m = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        print(f"| {name} | {m['rps']:,.0f} | {m['user']:.1f} | {m['sys']:.1f} | {m['TcpOutSegs']:.2f} "
              f"| {m['TcpExtTCPPureAcks']:.2f} | {m['TcpExtDelayedACKs']:.3f} |")


if __name__ == "__main__":
    main()
