#!/usr/bin/env python3
"""Reproduction: a WebSocket tunnel accepted on the VIP stays open on the node that lost
the VIP (preemption), with its backend connection, until tunnel_timeout (1h by default).

    python3 bench/soak/orphan_repro.py [--tunnel-timeout 1h] [--watch 60]

Uses the soak's lab (bench/soak.py): namespaces, two rampart nodes with [ha], pods s7/s8.
Node b starts alone and takes the VIP; the client opens a WebSocket through the VIP
(served by b) and exchanges one message; node a (priority 150, preempt) starts and takes
the VIP back; the client closes its socket. Then the script watches node b's sockets.
"""

import argparse
import base64
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import soak  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tunnel-timeout", default=None, help="set the web pool's tunnel_timeout")
    ap.add_argument("--watch", type=float, default=60)
    args = ap.parse_args()
    ns_args = argparse.Namespace(keep=False)
    lab = soak.Lab(ns_args)
    rampart = os.environ.get("RAMPART", f"{soak.REPO}/target/debug/rampart")
    try:
        os.makedirs(lab.dir, exist_ok=True)
        lab.rampart = rampart
        sw = lab.add_ns("sw")
        soak.run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        soak.run(["ip", "-n", sw, "link", "set", "br0", "up"])
        hosts = {"a": ["192.0.2.1"], "b": ["192.0.2.2"], "c": ["192.0.2.10"],
                 "be": ["192.0.2.20", soak.PODS["s7"], soak.PODS["s8"]]}
        os.makedirs(f"{lab.dir}/ctl", exist_ok=True)
        os.makedirs(f"{lab.dir}/keys", exist_ok=True)
        os.makedirs(f"{lab.dir}/logs", exist_ok=True)
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
            text = lab.config_text(n, 0)
            if args.tunnel_timeout:
                text = text.replace('tunnel_timeout = "30s"', f'tunnel_timeout = "{args.tunnel_timeout}"')
            else:
                text = text.replace('tunnel_timeout = "30s"\n', "")  # the default: 1h
            with open(f"{lab.dir}/{n}.toml", "w") as f:
                f.write(text)
        lab.start_node("b")
        lab.wait_node_ready("b")
        soak.wait_for("b MASTER", lambda: lab.ha_state("b") == "MASTER", 15)
        print("node b is MASTER")

        def open_ws():
            s = socket.create_connection((soak.VIP, soak.WEB_PORT), timeout=5)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall((f"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            f = s.makefile("rb")
            status = f.readline()
            while f.readline().strip():
                pass
            soak.ws_write(s.sendall, 2, b"hello", True)
            echo = soak.ws_read(f.read)
            return s, f, status.decode().strip(), echo
        s, f, status, echo = lab.exec["c"].call(open_ws)
        print(f"client: WebSocket through the VIP: {status}, echo {echo}")
        lab.start_node("a")
        lab.wait_node_ready("a")
        soak.wait_for("a MASTER, b BACKUP",
                      lambda: lab.ha_state("a") == "MASTER" and lab.ha_state("b") == "BACKUP", 20)
        print("node a took the VIP back (preempt); node b is BACKUP")
        s.close()
        t0 = time.time()
        print("client closed its WebSocket socket")
        pid_b = lab.procs["b"].pid
        while time.time() - t0 < args.watch:
            conns = [x for x in soak.describe_fds(pid_b) if "ESTABLISHED" in x]
            print(f"+{time.time() - t0:5.1f}s node b ESTABLISHED sockets: {conns}")
            time.sleep(10)  # pacing: observation interval
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
