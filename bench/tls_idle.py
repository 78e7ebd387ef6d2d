#!/usr/bin/env python3
"""Memory of idle TLS connections, side by side: HAProxy (OpenSSL), nginx (OpenSSL)
and rampart (rustls) started with bench/tls.py's configs (one thread or worker
each, the ECDSA listener), each fresh, then N TLS 1.3 connections made to it one
after another, one keep-alive GET each, held idle for 3 s; the growth of the
proxy's RSS (nginx: its master's and worker's) per connection. Two rounds, interleaved.

    python3 bench/tls_idle.py target/release/rampart [N]

Standard library only (Python's ssl module is the client); certificates made
with the openssl CLI, as tls.py makes them.
"""
import argparse, asyncio, os, ssl, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tls as T  # noqa: E402
from bench import raise_nofile  # noqa: E402


async def hold(port, n):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conns = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=T.SNI)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await r.readuntil(b"hello\n")
        conns.append(w)
    return conns


def main():
    rampart = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    raise_nofile()
    a = argparse.Namespace(rampart=rampart, rampart_alt=None, threads=1, bulk_mib=1,
                           rounds=1, duration=1, connections=1, quick=True, out=None)
    b = T.TlsBench(a)
    results = {}
    try:
        b.setup()
        for name in ["haproxy", "nginx", "rampart"] * 2:
            # a fresh process: what earlier rounds freed but kept is not counted
            b.restart(name)
            before = b.rss_kib(name)
            loop = asyncio.new_event_loop()
            conns = loop.run_until_complete(hold(T.PORTS[name][0], n))
            time.sleep(3)
            after = b.rss_kib(name)
            for w in conns:
                w.transport.abort()
            loop.close()
            each = (after - before) * 1024 / n
            results.setdefault(name, []).append(each)
            print(f"{name}: {n} idle TLS connections, RSS {before} -> {after} KiB, {each:.0f} bytes each",
                  file=sys.stderr, flush=True)
    finally:
        b.stop_all()
    h = sum(results["haproxy"]) / 2
    x = sum(results["nginx"]) / 2
    r = sum(results["rampart"]) / 2
    print(f"| bytes per idle TLS connection ({n}, one GET each) | {h:,.0f} | {x:,.0f} | {r:,.0f} "
          f"| {r / h:.2f} | {r / x:.2f} |")


if __name__ == "__main__":
    main()
