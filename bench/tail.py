#!/usr/bin/env python3
"""What sets the fixed-rate row's tail: a scheduler trace of each proxy's run.

    python3 bench/tail.py --rampart target/release/rampart [--targets haproxy,rampart]
                          [--duration 10] [--rounds 1] [--realtime] [--rate N]

Starts bench.py's backend and proxies, and for each target runs the fixed-rate
scenario (h2load `--h1 --rps`, 50 connections, half the slowest proxy's
keep-alive req/s measured first) with the kernel's scheduler events traced
(`sched_switch`, `sched_wakeup`, through tracefs; root only). The slowest 0.1%
of the requests (those at or above p99.9) are grouped into stalls: requests in
flight at the same time. For each stall it prints how many requests it held,
how long it lasted, and which tasks ran on the proxy's CPU during it: the
proxy, or something else that took the CPU from it.

`--realtime` runs the backend, the proxy and h2load at SCHED_FIFO priority 1,
as bench.py's real-time rows do.

A task's time on a CPU is counted from its `sched_switch` in (or, from the
idle CPU, its `sched_wakeup` onto that CPU) to its `sched_switch` out; a
stretch whose start was not traced is left out. In the traces of these
machines, fewer switches out of the idle task are recorded than into it
(each round prints both counts), so some stretches that began on an idle CPU
are missed. Each round also prints the CPUs' steal time (/proc/stat): time
the machine's host gave to something else.

A stall is counted in requests, not connections (h2load's log does not name
the connection). With `--rps`, a request due during a stall waits in h2load
and its duration is counted from when it is sent, so the log understates a
stall's effect on the requests that were due in it.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

TRACEFS = "/sys/kernel/tracing"
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)$")


def tw(path, value):
    with open(os.path.join(TRACEFS, path), "w") as f:
        f.write(value)


EVENTS = ("sched/sched_switch", "sched/sched_wakeup")


def tr(path):
    with open(os.path.join(TRACEFS, path)) as f:
        return f.read().strip()


def trace_on():
    """Starts tracing; returns the settings to put back (trace_off)."""
    if not os.path.exists(os.path.join(TRACEFS, "trace")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
    clock = re.search(r"\[(\w+)\]", tr("trace_clock"))
    saved = {"buffer_size_kb": tr("buffer_size_kb"), "trace_clock": clock.group(1) if clock else "local"}
    tw("tracing_on", "0")
    tw("trace", "")
    tw("buffer_size_kb", "100000")
    tw("trace_clock", "mono")
    for e in EVENTS:
        tw(f"events/{e}/enable", "1")
    tw("tracing_on", "1")
    return saved


def trace_off(saved, out=None):
    """Stops tracing, writes the trace to `out` (if given) and puts the
    settings back."""
    tw("tracing_on", "0")
    try:
        if out:
            with open(out, "w") as f:
                subprocess.run(["cat", os.path.join(TRACEFS, "trace")], stdout=f, check=True)
    finally:
        for e in EVENTS:
            tw(f"events/{e}/enable", "0")
        tw("trace", "")
        for k, v in saved.items():
            tw(k, v)


def steal():
    """Per CPU: ticks of steal time so far (time the machine's host ran
    something else while this CPU had work), from /proc/stat."""
    r = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                r[int(m.group(1))] = int(m.group(2).split()[7])
    return r


def idle_switches(trace, cpu):
    """Traced switches into and out of `cpu`'s idle task. Fewer out than in
    means switches out of the idle loop went untraced."""
    into = out = 0
    with open(trace) as f:
        for line in f:
            m = LINE.match(line)
            if m and m.group(5) == "sched_switch" and int(m.group(3)) == cpu:
                into += " next_pid=0 " in m.group(6)
                out += " prev_pid=0 " in m.group(6)
    return into, out


def requests(log):
    """(start µs since the epoch, duration µs) of each answered request."""
    rows = []
    with open(log) as f:
        for line in f:
            p = line.split()
            if len(p) >= 3 and p[1] == "200":
                rows.append((int(p[0]), int(p[2])))
    rows.sort()
    return rows


def stalls(rows):
    """The requests at or above p99.9, grouped by overlap: [start, end, count]."""
    durs = sorted(d for _, d in rows)
    p999 = durs[int(0.999 * len(durs))]
    ev = []
    for t, d in rows:
        if d < p999:
            continue
        if ev and t <= ev[-1][1]:
            ev[-1][1] = max(ev[-1][1], t + d)
            ev[-1][2] += 1
        else:
            ev.append([t, t + d, 1])
    return p999, ev


def runs(trace, cpu):
    """(start, end, task) of each stretch a task ran on `cpu` (monotonic s)."""
    out = []
    cur = None  # (task, since), None while the CPU is idle
    with open(trace) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            ts, ev, rest = float(m.group(4)), m.group(5), m.group(6)
            if ev == "sched_wakeup":
                # a task woken onto the idle CPU runs next (the switch out of
                # the idle task is not always in the trace)
                w = re.search(r"comm=(.*?) pid=(\d+) .*target_cpu=(\d+)", rest)
                if cur is None and w and int(w.group(3)) == cpu:
                    cur = (f"{w.group(1)}[{w.group(2)}]", ts)
                continue
            if ev != "sched_switch" or int(m.group(3)) != cpu:
                continue
            prev = re.search(r"prev_comm=(.*?) prev_pid=(\d+)", rest)
            nxt = re.search(r"next_comm=(.*?) next_pid=(\d+)", rest)
            task = f"{prev.group(1)}[{prev.group(2)}]"
            if cur and cur[0] == task:
                out.append((cur[1], ts, task))
            cur = (f"{nxt.group(1)}[{nxt.group(2)}]", ts) if nxt.group(2) != "0" else None
    return out


def attribute(stretches, start, end):
    """CPU time (ms) by task between start and end."""
    spent = collections.Counter()
    for s, e, task in stretches:
        a, b = max(s, start), min(e, end)
        if b > a:
            spent[task] += (b - a) * 1000
    return spent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rampart", required=True)
    ap.add_argument("--targets", default="haproxy,rampart")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--realtime", action="store_true")
    ap.add_argument("--rate", type=int, help="req/s to offer (default: half the slowest target's keep-alive req/s)")
    ap.add_argument("--keep", help="a directory to keep the traces and h2load's logs in")
    a = ap.parse_args()
    b = B.Bench(B.tool_args(a.rampart, duration=a.duration))
    B.raise_nofile()
    keep = a.keep or b.dir
    os.makedirs(keep, exist_ok=True)
    targets = a.targets.split(",")
    proxy_cpu = int(b.proxy_cpus.split(",")[0])
    load_cpu = int(b.load_cpus.split(",")[0])
    try:
        b.setup()
        rate = a.rate or int(min(b.wrk(B.PORTS[t][0])["rps"] for t in targets) * 0.5)
        print(f"offered: {rate} req/s; the proxies on CPU {proxy_cpu}", file=sys.stderr)
        for rnd in range(a.rounds):
            for t in targets:
                names = ["backend"] + ([t] if t != "direct" else [])
                if a.realtime and not b.realtime(names, True):
                    sys.exit("chrt failed: --realtime needs root")
                trace = os.path.join(keep, f"{t}-{rnd}.trace")
                try:
                    off = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
                    stolen = steal()
                    saved = trace_on()
                    try:
                        r = b.fixed_rate(B.PORTS[t][0], rate, realtime=a.realtime)
                    except BaseException:
                        trace_off(saved)
                        raise
                    trace_off(saved, trace)
                    stolen = {c: v - stolen.get(c, 0) for c, v in steal().items()}
                finally:
                    if a.realtime and not b.realtime(names, False):
                        sys.exit(f"could not set {names} back to the default scheduling policy")
                if r.get("p50_ms") is None:
                    print(f"\n{t}, round {rnd + 1}: no requests answered", file=sys.stderr)
                    continue
                log = os.path.join(keep, f"{t}-{rnd}.log")
                os.replace(os.path.join(b.dir, f"h2load-{B.PORTS[t][0]}.log"), log)
                rows = requests(log)
                p999, ev = stalls(rows)
                stretches = runs(trace, proxy_cpu)
                load_stretches = runs(trace, load_cpu)
                print(f"\n{t}, round {rnd + 1}: {len(rows)} requests, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                      f"p99.9 {p999 / 1000:.2f} ms; {len(ev)} stalls hold the slowest 0.1%")
                tick = os.sysconf("SC_CLK_TCK")
                print("  steal time (ms): " + ", ".join(f"CPU {c} {v * 1000 / tick:.0f}" for c, v in sorted(stolen.items()))
                      + "; traced switches into / out of the idle task: "
                      + ", ".join(f"CPU {c} {'/'.join(map(str, idle_switches(trace, c)))}" for c in (proxy_cpu, load_cpu)))
                total, load_total = collections.Counter(), collections.Counter()
                for s, e, n in sorted(ev, key=lambda x: -x[2])[:12]:
                    spent = attribute(stretches, s / 1e6 - off, e / 1e6 - off)
                    on_load = attribute(load_stretches, s / 1e6 - off, e / 1e6 - off)
                    total.update(spent)
                    load_total.update(on_load)
                    who = ", ".join(f"{k} {v:.2f}" for k, v in spent.most_common(3)) or "idle"
                    load_who = ", ".join(f"{k} {v:.2f}" for k, v in on_load.most_common(3)) or "idle"
                    print(f"  {n:3d} requests, {(e - s) / 1000:5.1f} ms, at {(s - rows[0][0]) / 1e6:6.3f} s; "
                          f"ran (ms) on CPU {proxy_cpu}: {who}; on CPU {load_cpu}: {load_who}")
                for cpu, tot in ((proxy_cpu, total), (load_cpu, load_total)):
                    print(f"  in the 12 largest stalls, CPU {cpu} ran (ms): "
                          + ", ".join(f"{k} {v:.1f}" for k, v in tot.most_common(6)))
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
