#!/usr/bin/env python3
"""Where each proxy's CPU time per request goes: user and system time, minor
page faults and context switches per request, from /proc, for HTTP/1.1 with a
new connection per request and with keep-alive. The proxies run with
bench.py's configs, pinned as there; wrk runs 5 s per proxy.

callgrind counts user-space instructions only; this shows the kernel's share
and how fast those instructions run (user µs against instructions).

    python3 bench/cpu_split.py target/release/rampart
"""
import argparse
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def counters(pids):
    """minflt, utime, stime (ticks), voluntary and involuntary switches."""
    mf = ut = st = v = nv = 0
    for pid in pids:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        mf, ut, st = mf + int(f[7]), ut + int(f[11]), st + int(f[12])
        for t in glob.glob(f"/proc/{pid}/task/*/status"):
            for line in open(t):
                if line.startswith("voluntary_ctxt_switches"):
                    v += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    nv += int(line.split()[1])
    return mf, ut, st, v, nv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rampart")
    ap.add_argument("--duration", type=int, default=5)
    a = ap.parse_args()
    b = bench.Bench(bench.tool_args(a.rampart, a.duration))
    tick = os.sysconf("SC_CLK_TCK")
    print("| mode | proxy | requests | user µs/req | system µs/req | minor faults/req "
          "| voluntary switches/req | involuntary/req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    try:
        bench.raise_nofile()
        b.setup()
        for mode, extra in [("new connection", "-H 'Connection: close'"), ("keep-alive", "")]:
            for name in bench.PROXIES:
                pids = b.pids(name)
                c0 = counters(pids)
                out = b.load(f"wrk -t1 -c50 -d{a.duration}s {extra} "
                             f"http://127.0.0.1:{bench.PORTS[name][0]}/").stdout
                c1 = counters(pids)
                n = int(re.search(r"(\d+) requests in", out).group(1))
                d = [y - x for x, y in zip(c0, c1)]
                print(f"| {mode} | {name} | {n:,} | {d[1] * 1e6 / tick / n:.1f} | "
                      f"{d[2] * 1e6 / tick / n:.1f} | {d[0] / n:.3f} | {d[3] / n:.3f} | {d[4] / n:.3f} |")
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
