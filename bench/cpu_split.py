#!/usr/bin/env python3
"""Where each proxy's CPU time per request goes: user and system time, minor
page faults and context switches per request, from /proc, for HTTP/1.1 with a
new connection per request and with keep-alive, and for h2c. The proxies run
with bench.py's configs, pinned as there; wrk (h2load for h2c, 10 streams per
connection, as bench.py) runs 5 s per proxy.

callgrind counts user-space instructions only; this shows the kernel's share
and how fast those instructions run (user µs against instructions).

    python3 bench/cpu_split.py target/release/rampart
"""
import argparse
import glob
import os
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
        # (mode, bench.py's measurement on a port of bench.PORTS[name])
        modes = [("new connection", lambda name: b.wrk(bench.PORTS[name][0], "-H 'Connection: close'")),
                 ("keep-alive", lambda name: b.wrk(bench.PORTS[name][0])),
                 ("h2c", lambda name: b.h2(bench.PORTS[name][2]))]
        for mode, measure in modes:
            for name in bench.PROXIES:
                pids = b.pids(name)
                c0 = counters(pids)
                n = measure(name)["requests"]
                c1 = counters(pids)
                d = [y - x for x, y in zip(c0, c1)]
                print(f"| {mode} | {name} | {n:,} | {d[1] * 1e6 / tick / n:.1f} | "
                      f"{d[2] * 1e6 / tick / n:.1f} | {d[0] / n:.3f} | {d[3] / n:.3f} | {d[4] / n:.3f} |")
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
