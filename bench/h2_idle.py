# bench/h2_idle.py PORT N PID [PACE]: N h2c connections to a proxy on PORT, one
# GET each, then held idle for 3 s; prints the growth of process PID's RSS per
# connection. PACE: seconds between connections (default 0). The figure can
# depend on it: memory a connection lets go of goes to the heap, not always to
# the system, so a proxy that keeps a connection's buffers for a while after
# its last stream shows them for every connection still within that while
# (rampart kept them a second until 2026-12-03: 12,771 bytes each at PACE 0,
# 7,344 at 0.002, 2,000 connections). bench.py's idle scenario runs it at 0.
# Debian's python3-h2 (/usr/bin/python3). The proxy's backend must answer GET /.
import os, socket, sys, time
# (this directory's h2.py, the HTTP/2 bench, would shadow the h2 package)
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
import h2.connection, h2.config, h2.events
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
pace = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")], end_stream=True)
    s.sendall(c.data_to_send())
    done = False
    while not done:
        data = s.recv(65536)
        if not data: break
        for e in c.receive_data(data):
            if isinstance(e, h2.events.StreamEnded): done = True
        s.sendall(c.data_to_send())
    socks.append((s, c))
    if pace:
        time.sleep(pace)
time.sleep(3)
after = rss()
print(f"{n} idle h2c connections: RSS {before} -> {after} KiB, {(after-before)*1024/n:.0f} bytes each")
