#!/usr/bin/env python3
"""TCP segments per request on loopback, for HTTP/1.1 with a new connection per
request, by proxy: the client's side (wrk and the proxy) and the backend's (the
proxy and nginx), by kind (SYN, bare ACK, data, FIN alone). tcpdump counts them
during 1 s of `wrk -c20 -H 'Connection: close'`, after a second of warm-up so
that every proxy's backend connections are open. Per connection captured,
counted by the clients' SYNs: tcpdump drops some packets at this rate, so wrk's
count of requests is not the divisor. The proxies run with
bench.py's configs, pinned as there. Needs tcpdump (apt).

A segment costs work on both sides of loopback; in this scenario the load
generator's CPU is the one without idle time (bench.py's idle-share rows).

    python3 bench/segments.py target/release/rampart
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

LINE = re.compile(r"IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): Flags \[([^\]]*)\].*length (\d+)")


def kind(flags, length):
    if "S" in flags:
        return "SYN"
    if "R" in flags:
        return "RST"
    if length > 0:
        return "data" + (" + FIN" if "F" in flags else "")
    return "FIN" if "F" in flags else "bare ACK"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rampart")
    a = ap.parse_args()
    b = bench.Bench(bench.tool_args(a.rampart, duration=1, connections=20))
    rows = {}
    try:
        bench.raise_nofile()
        b.setup()
        for name in bench.PROXIES:
            port = bench.PORTS[name][0]
            url = f"http://127.0.0.1:{port}/"
            b.load(f"wrk -t1 -c20 -d1s -H 'Connection: close' {url}")
            path = os.path.join(b.dir, f"{name}.tcpdump")
            err_path = path + ".err"
            with open(path, "w") as out, open(err_path, "w") as err:
                dump = subprocess.Popen(
                    ["tcpdump", "-l", "-n", "-i", "lo", f"tcp port {port} or tcp port 19000"],
                    stdout=out, stderr=err)
                # capturing once it says so
                deadline = time.time() + 10
                while "listening on" not in open(err_path).read():
                    if time.time() > deadline or dump.poll() is not None:
                        sys.exit(f"tcpdump did not start: {open(err_path).read()}")
                    time.sleep(0.05)
                text = b.load(f"wrk -t1 -c20 -d1s -H 'Connection: close' {url}").stdout
                dump.terminate()
                dump.wait()
            n = int(re.search(r"(\d+) requests in", text).group(1))
            c = collections.Counter()
            for line in open(path):
                m = LINE.search(line)
                if not m:
                    continue
                src, dst, flags, length = m.group(1), m.group(2), m.group(3), int(m.group(4))
                side = "backend" if "19000" in (src, dst) else "client"
                who = ("proxy" if src != "19000" else "backend") if side == "backend" else (
                    "proxy" if src == str(port) else "client")
                c[(side, who, kind(flags, length))] += 1
            # per connection (one request each): tcpdump drops some packets
            # at this rate, so wrk's count of requests is not the divisor
            conns = c[("client", "client", "SYN")]
            if conns < n / 4:
                sys.exit(f"{name}: {conns} connections captured of {n} requests")
            rows[name] = (conns, c)
    finally:
        b.stop_all()
    keys = sorted({k for _, c in rows.values() for k in c})
    print("| side | sender | kind | " + " | ".join(bench.PROXIES) + " |")
    print("|---|---|---|" + "---:|" * len(bench.PROXIES))
    for k in keys:
        vals = [rows[p][1][k] / rows[p][0] for p in bench.PROXIES]
        if max(vals) < 0.05:
            continue  # the odd connection opened or closed during the capture
        print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    totals = [sum(rows[p][1].values()) / rows[p][0] for p in bench.PROXIES]
    print("| all | | | " + " | ".join(f"{t:.2f}" for t in totals) + " |")


if __name__ == "__main__":
    main()
