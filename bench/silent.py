#!/usr/bin/env python3
"""RSS per connection that sends nothing after connecting (a browser's
preconnect, a slow client), for one rampart binary. Standard library only.

    python3 bench/silent.py target/release/rampart [N]

Starts the binary with a one-thread config in a temporary directory, sends 100
requests (so the worker's pool of read buffers is warm), then opens N (default
5,000) connections that send nothing, waits until the admin API counts all of
them, and prints (VmRSS after - VmRSS before) / N.
"""
import http.server
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"hello\n")

    def log_message(self, *args):
        pass


def main():
    binary, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    listen, admin = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="rampart-silent-")
    cfg = os.path.join(d, "rampart.toml")
    with open(cfg, "w") as f:
        f.write(f"""[global]
threads = 1
access_log = "off"
[admin]
bind = "127.0.0.1:{admin}"
[[listener]]
name = "web"
bind = ["127.0.0.1:{listen}"]
mode = "http"
pool = "be"
[[pool]]
name = "be"
  [[pool.server]]
  address = "127.0.0.1:{backend.server_address[1]}"
""")
    p = subprocess.Popen([binary, "run", "-c", cfg],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def conns():
            text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
            return sum(float(l.split()[-1]) for l in text.splitlines()
                       if l.startswith("rampart_listener_connections{"))

        deadline = time.time() + 10
        while True:
            try:
                conns()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("rampart did not start")
                time.sleep(0.05)
        for _ in range(100):
            urllib.request.urlopen(f"http://127.0.0.1:{listen}/").read()
        deadline = time.time() + 10
        while conns() != 0:
            if time.time() > deadline:
                raise SystemExit("the warm-up connections did not close")
            time.sleep(0.05)
        before = rss(p.pid)
        socks = [socket.create_connection(("127.0.0.1", listen)) for _ in range(n)]
        deadline = time.time() + 30
        while conns() < n:
            if time.time() > deadline:
                raise SystemExit("not all connections were accepted")
            time.sleep(0.05)
        after = rss(p.pid)
        print(f"{binary}: {n} connections that send nothing, "
              f"{(after - before) / n:.0f} bytes each")
        for s in socks:
            s.close()
    finally:
        p.kill()
        p.wait()
        backend.shutdown()
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


if __name__ == "__main__":
    main()
