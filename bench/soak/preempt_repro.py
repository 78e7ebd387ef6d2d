#!/usr/bin/env python3
"""Reproduction: a request in flight on the master when the VIP moves away from it by
preemption never gets its answer; the client waits until its own timeout, although the
backend answered and nothing was killed.

    python3 bench/soak/preempt_repro.py

Uses the soak's lab (bench/soak.py), with the web pool's server_timeout raised to 30s.
Node b starts alone and takes the VIP. The client sends GET /slow/6000 (the pod answers
after 6 s) through the VIP, on a fresh connection, with a 15 s timeout; node a (priority
150, preempt = true, preempt_delay = 2s) then starts and takes the VIP back about 2.5 s
later. Control: the same request with no VIP move. Then the same with a graceful stop:
SIGTERM to the master (a) while a request it forwarded is answered 1.5 s later, within
shutdown_grace (2 s).
"""

import argparse
import http.client
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import soak  # noqa: E402


def get_slow(ms, timeout):
    t0 = time.time()
    try:
        c = http.client.HTTPConnection(soak.VIP, soak.WEB_PORT, timeout=timeout)
        c.request("GET", f"/slow/{ms}", headers={"Host": "soak"})
        r = c.getresponse()
        body = r.read()
        c.close()
        return f"HTTP {r.status} from {r.getheader('X-Pod')} after {time.time() - t0:.2f}s"
    except Exception as e:  # the result
        return f"{type(e).__name__} after {time.time() - t0:.2f}s"


def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    lab = soak.Lab(argparse.Namespace(keep=False))
    lab.rampart = os.environ.get("RAMPART", f"{soak.REPO}/target/debug/rampart")
    try:
        os.makedirs(lab.dir, exist_ok=True)
        for sub in ("ctl", "keys", "logs"):
            os.makedirs(f"{lab.dir}/{sub}", exist_ok=True)
        sw = lab.add_ns("sw")
        soak.run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        soak.run(["ip", "-n", sw, "link", "set", "br0", "up"])
        hosts = {"a": ["192.0.2.1"], "b": ["192.0.2.2"], "c": ["192.0.2.10"],
                 "be": ["192.0.2.20", soak.PODS["s7"], soak.PODS["s8"]]}
        for role, addrs in hosts.items():
            ns = lab.add_ns(role)
            soak.run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name",
                      f"p{role}", "netns", sw])
            soak.run(["ip", "-n", sw, "link", "set", f"p{role}", "master", "br0", "up"])
            for a in addrs:
                soak.run(["ip", "-n", ns, "addr", "add", f"{a}/24", "dev", "eth0"])
            soak.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        for role in ("a", "b", "c"):
            lab.exec[role] = soak.NsExec(lab.ns[role])
        for p in ("s7", "s8"):
            lab.start_pod(p)
        lab.write_keys_and_notify()
        for n in ("a", "b"):
            with open(f"{lab.dir}/{n}.toml", "w") as f:
                f.write(lab.config_text(n, 0).replace('server_timeout = "2s"', 'server_timeout = "30s"'))
        lab.start_node("b")
        lab.wait_node_ready("b")
        soak.wait_for("b MASTER", lambda: lab.ha_state("b") == "MASTER", 15)
        soak.wait_for("b's pool up", lambda: lab.eligible("b", "web") >= 2, 15)
        print("control, no VIP move:", lab.exec["c"].call(get_slow, 6000, 15, timeout=30))
        box = []
        t = threading.Thread(target=lambda: box.append(lab.exec["c"].call(get_slow, 6000, 15, timeout=30)))
        t0 = time.time()
        t.start()
        time.sleep(0.2)  # pacing: the request is on its way
        lab.start_node("a")
        lab.wait_node_ready("a")
        soak.wait_for("a MASTER", lambda: lab.ha_state("a") == "MASTER", 20, poll=0.02)
        print(f"node a took the VIP back by preemption {time.time() - t0:.2f}s after the request was sent")
        t.join(30)
        print("with the VIP moving away from b mid-request:", box[0] if box else "?")

        # SIGTERM of the master (a now): it hands over, releases the VIP, then drains for
        # shutdown_grace (2s): a request its backend answers after 1.5 s is in flight
        box.clear()
        t = threading.Thread(target=lambda: box.append(lab.exec["c"].call(get_slow, 1500, 15, timeout=30)))
        t0 = time.time()
        t.start()
        time.sleep(0.3)  # pacing: the request is on its way
        os.kill(lab.procs["a"].pid, 15)
        soak.wait_for("b MASTER", lambda: lab.ha_state("b") == "MASTER", 10, poll=0.02)
        print(f"SIGTERM to master a {0.3:.1f}s after the request; b MASTER {time.time() - t0:.2f}s after it")
        t.join(30)
        print("SIGTERM of the master mid-request (answer due after 1.5 s, shutdown_grace 2 s):",
              box[0] if box else "?")
        lab.procs["a"].popen.wait(10)
        print("node a exit code:", lab.procs["a"].popen.returncode)
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
