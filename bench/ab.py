#!/usr/bin/env python3
"""Two rampart builds side by side, with HAProxy and nginx, in one setup:
bench.py's wrk (50 connections, keep-alive or a new connection per request) or
h2load (h2c, 10 streams per connection) against each in turn, for ROUNDS
interleaved rounds; per target the median req/s and the busy CPU time per request of the load generator's CPU and of the proxies' (from
/proc/stat: every proxy is pinned to the same CPU, and only the one under
load is busy). A change's effect in a row that the load generator's CPU bounds
shows in these CPU figures rather than in req/s.

    python3 bench/ab.py OLD_BINARY NEW_BINARY [--mode close|keepalive|h2c] [--rounds 6]
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

# the second rampart's ports: bench.py's, moved by 10
MOVED = [("19103", "19113"), ("19203", "19213"), ("19404", "19414"), ("19403", "19413"),
         ("19503", "19513")]


def busy_ticks():
    """Per CPU number: busy ticks (all but idle and iowait) so far."""
    return {c: t - i for c, (i, t) in bench.cpu_idle().items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--mode", choices=["close", "keepalive", "h2c"], default="close")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=5)
    a = ap.parse_args()
    b = bench.Bench(bench.tool_args(a.new, a.duration))
    extra = "-H 'Connection: close'" if a.mode == "close" else ""
    tick = os.sysconf("SC_CLK_TCK")
    load_cpus = [int(c) for c in b.load_cpus.split(",")]
    proxy_cpus = [int(c) for c in b.proxy_cpus.split(",")]
    res = {}
    try:
        bench.raise_nofile()
        b.setup()
        cfg = open(os.path.join(b.dir, "rampart.toml")).read()
        for x, y in MOVED:
            cfg = cfg.replace(x, y)
        b.start("old", [a.old, "run", "-c", b.write("old.toml", cfg)], b.proxy_cpus)
        b.wait_port(19113, "the old build")
        targets = {"haproxy": 19101, "nginx": 19102, "old": 19113, "new": 19103}
        if a.mode == "h2c":
            targets.update(haproxy=bench.PORTS["haproxy"][2], nginx=bench.PORTS["nginx"][2])
        for r in range(a.rounds):
            for name, port in targets.items():
                t0 = busy_ticks()
                n = (b.h2(port) if a.mode == "h2c" else b.wrk(port, extra))["requests"]
                t1 = busy_ticks()
                us = lambda cpus: sum(t1[c] - t0[c] for c in cpus) * 1e6 / tick / n  # noqa: E731
                res.setdefault(name, {"rps": [], "load": [], "proxy": []})
                res[name]["rps"].append(n / a.duration)
                res[name]["load"].append(us(load_cpus))
                res[name]["proxy"].append(us(proxy_cpus))
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
    finally:
        b.stop_all()
    print(f"| {a.mode}, {a.rounds} rounds of {a.duration} s, medians | req/s | load generator's CPU "
          "µs/request | proxy's CPU µs/request |")
    print("|---|---:|---:|---:|")
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in res.items()}
    for name, m in med.items():
        print(f"| {name} | {m['rps']:,.0f} | {m['load']:.1f} | {m['proxy']:.1f} |")
    paired = [n / o for n, o in zip(res["new"]["rps"], res["old"]["rps"])]
    print(f"\nnew/old req/s, round by round: {' '.join(f'{x:.3f}' for x in paired)}; "
          f"new/haproxy {med['new']['rps'] / med['haproxy']['rps']:.3f}, "
          f"old/haproxy {med['old']['rps'] / med['haproxy']['rps']:.3f}")


if __name__ == "__main__":
    main()
