#!/usr/bin/python3
"""HTTP/2 probes for tests/http2.rs, written with the `h2`/`hyperframe`/`hpack`
packages (Debian's python3-h2). Each prints one JSON line of what the server did.

  probe.py idle HOST PORT WAIT            one request, then wait for GOAWAY
  probe.py rapid-reset HOST PORT N        N x (HEADERS, RST_STREAM CANCEL)
  probe.py rapid-reset-held HOST PORT N   rounds of 50 HEADERS for /slow?ms=5000, 10 ms
                                          for the server to start them, then their 50
                                          RST_STREAM CANCEL; up to N streams
  probe.py continuation HOST PORT N       HEADERS without END_HEADERS, N CONTINUATIONs
  probe.py big-headers HOST PORT BYTES    one request with BYTES of header fields
  probe.py settings-flood HOST PORT N     N SETTINGS frames, nothing read meanwhile
  probe.py ping-flood HOST PORT N         N PINGs, nothing read meanwhile
  probe.py zero-window HOST PORT N        window 0, N streams of /big?bytes=1048576,
                                          no WINDOW_UPDATE: what the server does
  probe.py max-stream-id HOST PORT _      requests on streams 1 and 2^31-1, then 3
  probe.py heads HOST PORT N              N requests in turn on one connection: each
                                          response's fields as one decoder decoded
                                          them, and its dynamic table after
  probe.py padded-upload HOST PORT BYTES[:K]
                                          POST /upload of BYTES (byte k is k % 251) in
                                          DATA frames of 100 bytes and 155 of padding,
                                          written together as the windows allow; first K
                                          streams that send more than their content-length
  probe.py reset-echo HOST PORT N         POST /stream-echo: N pieces of 1,000 bytes, each
                                          echoed back before the next, then RST_STREAM
                                          CANCEL, then a GET on the same connection
  probe.py never HOST PORT PATH           GET PATH with authorization sent "never indexed"
                                          (RFC 7541 6.2.3) and x-plain plainly: the
                                          answer's status, its fields that came "never
                                          indexed", and its body

Any command takes --tls SNI at the end: h2 over TLS (ALPN h2) instead of h2c.
"""
import json, socket, ssl, sys, time
import h2.config, h2.connection, h2.events
from hyperframe.frame import HeadersFrame, ContinuationFrame, SettingsFrame, Frame
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frames(buf):
    """Complete frames in buf: [(type, flags, stream, payload)], rest."""
    out = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[0:3], "big")
        if len(buf) < 9 + n:
            break
        out.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + n]))
        buf = buf[9 + n:]
    return out, buf


class Raw:
    """A raw HTTP/2 client connection: frames in, frames out, what came back."""

    def __init__(self, host, port, sni=None, settings=None):
        s = socket.create_connection((host, port), timeout=10)
        if sni:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            s = ctx.wrap_socket(s, server_hostname=sni)
        self.s = s
        self.buf = b""
        self.seen = []  # (type, flags, stream, payload)
        self.closed = False
        self.s.sendall(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    def send(self, data):
        try:
            self.s.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False

    def pump(self, wait):
        """Reads what is there (waiting up to `wait`; 0: not at all)."""
        if wait == 0:
            self.s.setblocking(False)
        else:
            self.s.settimeout(wait)
        try:
            d = self.s.recv(65536)
            if not d:
                self.closed = True
                return
            self.buf += d
        except (socket.timeout, BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            self.closed = True
            return
        finally:
            self.s.settimeout(10)
        got, self.buf = frames(self.buf)
        for t, fl, sid, p in got:
            if t == 0x4 and not fl & 0x1:  # SETTINGS: ack it
                self.send(SettingsFrame(0, flags=["ACK"]).serialize())
            self.seen.append((t, fl, sid, p))

    def goaway(self):
        for t, _, _, p in self.seen:
            if t == 0x7:
                return {"last_stream": int.from_bytes(p[0:4], "big") & 0x7FFFFFFF,
                        "code": int.from_bytes(p[4:8], "big")}
        return None

    def rst(self):
        return [(sid, int.from_bytes(p[0:4], "big")) for t, _, sid, p in self.seen if t == 0x3]

    def statuses(self):
        d = hpack.Decoder()
        d.max_allowed_table_size = 65536
        out = []
        for t, fl, sid, p in self.seen:
            if t == 0x1:
                pad = p[0] if fl & 0x8 else 0
                body = p[1:len(p) - pad] if fl & 0x8 else p
                if fl & 0x20:
                    body = body[5:]
                try:
                    hs = dict(d.decode(body))
                    out.append((sid, hs.get(":status") or hs.get(b":status")))
                except Exception as e:
                    out.append((sid, f"undecodable: {e}"))
        return out


def request_headers(host, path="/", extra=()):
    return [(":method", "GET"), (":scheme", "http"), (":authority", host), (":path", path)] + list(extra)


def flood(c, n, frame):
    """Sends `frame` n times without reading; stops when the server stops reading
    (a send blocked 3 s: backpressure) or closes. What happened, as a dict."""
    c.s.settimeout(3)
    sent, blocked = 0, False
    batch = frame * 100
    for _ in range(n // 100):
        try:
            c.s.sendall(batch)
        except (socket.timeout, ssl.SSLWantWriteError):
            blocked = True
            break
        except OSError:
            c.closed = True
            break
        sent += 100
    # then read: a GOAWAY, a close, or the answers the server queued
    answered = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not c.goaway() and not c.closed:
        before = len(c.seen)
        c.pump(0.2)
        answered += len(c.seen) - before
        if len(c.seen) == before and not blocked:
            break
    return {"sent": sent, "blocked": blocked, "goaway": c.goaway(), "closed": c.closed,
            "frames_back": len(c.seen)}


def main():
    args = sys.argv[1:]
    sni = None
    if "--tls" in args:
        i = args.index("--tls")
        sni = args[i + 1]
        args = args[:i] + args[i + 2:]
    cmd, host, port, arg = args[0], args[1], int(args[2]), args[3]
    enc = hpack.Encoder()
    if cmd == "zero-window":
        c = Raw(host, port, sni, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    else:
        c = Raw(host, port, sni)
    if cmd in ("settings-flood", "ping-flood"):
        if cmd == "settings-flood":
            f = SettingsFrame(0, settings={SettingsFrame.HEADER_TABLE_SIZE: 4096}).serialize()
        else:
            f = (8).to_bytes(3, "big") + bytes([0x6, 0]) + (0).to_bytes(4, "big") + b"12345678"
        print(json.dumps(flood(c, int(arg), f)))
        return
    if cmd == "zero-window":
        n = int(arg)
        for i in range(n):
            block = enc.encode(request_headers(host, "/big?bytes=1048576"))
            c.send(HeadersFrame(1 + 2 * i, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        # hold: read what comes (HEADERS; DATA cannot, the windows are 0), until the
        # server gives up on the stalled streams or the time is over
        start = time.monotonic()
        deadline = start + float(__import__("os").environ.get("PROBE_HOLD", "8"))
        rst_at = None
        while time.monotonic() < deadline and not c.goaway() and not c.closed:
            c.pump(0.1)
            if rst_at is None and len(c.rst()) >= n:
                rst_at = time.monotonic() - start
                break
        data = sum(len(p) for t, _, _, p in c.seen if t == 0x0)
        print(json.dumps({"statuses": c.statuses(), "rst": c.rst(), "goaway": c.goaway(),
                          "closed": c.closed, "data_bytes": data, "all_reset_after": rst_at,
                          "held": time.monotonic() - start}))
        return
    if cmd == "max-stream-id":
        for sid in (1, 0x7FFFFFFF, 3):
            block = enc.encode(request_headers(host))
            c.send(HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not c.goaway() and not c.closed \
                    and not any(s == sid for s, _ in c.statuses()):
                c.pump(0.1)
        print(json.dumps({"statuses": c.statuses(), "goaway": c.goaway(), "closed": c.closed}))
        return
    if cmd == "padded-upload":
        n, _, k = arg.partition(":")
        n, k = int(n), int(k or 0)
        data = bytes(x % 251 for x in range(n))
        # the server's SETTINGS first: its stream window
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(t == 0x4 and not fl & 0x1 for t, fl, _, _ in c.seen):
            c.pump(0.1)
        initial = 65535
        for t, fl, _, p in c.seen:
            if t == 0x4 and not fl & 0x1:
                for i in range(0, len(p), 6):
                    if int.from_bytes(p[i:i + 2], "big") == 0x4:
                        initial = int.from_bytes(p[i + 2:i + 6], "big")
        win = {0: 65535}
        seen_updates = 0

        def updates(wait):
            nonlocal seen_updates
            c.pump(wait)
            for t, _, sid, p in c.seen[seen_updates:]:
                if t == 0x8 and sid in win:
                    win[sid] += int.from_bytes(p[0:4], "big") & 0x7FFFFFFF
            seen_updates = len(c.seen)

        def rst_on(sid):
            return any(s == sid for s, _ in c.rst())

        # K streams whose content-length (10) their DATA (16,000 bytes) belies:
        # each is reset, and must not keep what it took of the connection's window
        deadline = time.monotonic() + 20
        for j in range(k):
            sid = 1 + 2 * j
            win[sid] = initial
            block = enc.encode([(":method", "POST"), (":scheme", "http"), (":authority", host),
                                (":path", "/upload"), ("content-length", "10")])
            c.send(HeadersFrame(sid, block, flags=["END_HEADERS"]).serialize())
            while win[0] < 16000 and time.monotonic() < deadline and not c.closed:
                updates(0.2)
            if win[0] < 16000:
                break
            c.send((16000).to_bytes(3, "big") + bytes([0x0, 0x1]) + sid.to_bytes(4, "big") + bytes(16000))
            win[0] -= 16000
            while not rst_on(sid) and time.monotonic() < deadline and not c.closed:
                updates(0.1)
        sid = 1 + 2 * k
        win[sid] = initial
        block = enc.encode([(":method", "POST"), (":scheme", "http"), (":authority", host),
                            (":path", "/upload"), ("content-length", str(n))])
        c.send(HeadersFrame(sid, block, flags=["END_HEADERS"]).serialize())
        sent, pad = 0, 155
        # frames go in one write while the windows allow them
        out = b""
        while sent < n and time.monotonic() < deadline and not c.closed and not rst_on(sid):
            chunk = data[sent:sent + 100]
            cost = 1 + len(chunk) + pad
            if cost <= win[sid] and cost <= win[0]:
                last = sent + len(chunk) == n
                payload = bytes([pad]) + chunk + bytes(pad)
                out += (len(payload).to_bytes(3, "big") + bytes([0x0, 0x8 | (0x1 if last else 0)])
                        + sid.to_bytes(4, "big") + payload)
                sent += len(chunk)
                win[sid] -= cost
                win[0] -= cost
                if sent < n:
                    continue
            c.send(out)
            out = b""
            if sent == n:
                break
            updates(0.2)
        stalled = sent < n
        body = b""
        deadline = time.monotonic() + 10
        while not stalled and time.monotonic() < deadline and not c.closed and not rst_on(sid) \
                and not any(t == 0x0 and s == sid and fl & 0x1 for t, fl, s, _ in c.seen) \
                and not any(t == 0x1 and s == sid and fl & 0x1 for t, fl, s, _ in c.seen):
            c.pump(0.1)
        for t, fl, s, p in c.seen:
            if t == 0x0 and s == sid:
                pad_len = p[0] if fl & 0x8 else 0
                body += p[1:len(p) - pad_len] if fl & 0x8 else p
        print(json.dumps({"sent": sent, "stalled": stalled, "statuses": c.statuses(),
                          "rst": c.rst(), "goaway": c.goaway(), "body": body.decode(errors="replace")}))
        return
    if cmd == "reset-echo":
        block = enc.encode([(":method", "POST"), (":scheme", "http"), (":authority", host),
                            (":path", "/stream-echo")])
        c.send(HeadersFrame(1, block, flags=["END_HEADERS"]).serialize())
        echoed = 0
        for i in range(int(arg)):
            c.send((1000).to_bytes(3, "big") + bytes([0x0, 0]) + (1).to_bytes(4, "big")
                   + bytes([0x61 + i]) * 1000)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not c.closed and not c.rst() and \
                    sum(len(p) for t, _, sid, p in c.seen if t == 0x0 and sid == 1) < 1000 * (i + 1):
                c.pump(0.1)
        echoed = sum(len(p) for t, _, sid, p in c.seen if t == 0x0 and sid == 1)
        # RST_STREAM(CANCEL)
        c.send((4).to_bytes(3, "big") + bytes([0x3, 0]) + (1).to_bytes(4, "big") + (8).to_bytes(4, "big"))
        c.send(HeadersFrame(3, enc.encode(request_headers(host)),
                            flags=["END_HEADERS", "END_STREAM"]).serialize())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not c.closed and not any(s == 3 for s, _ in c.statuses()):
            c.pump(0.1)
        print(json.dumps({"echoed": echoed, "statuses": c.statuses(), "rst": c.rst(),
                          "goaway": c.goaway(), "closed": c.closed}))
        return
    if cmd == "never":
        req = request_headers(host, arg, [hpack.NeverIndexedHeaderTuple("authorization", "Bearer s3cret"),
                                          ("x-plain", "p")])
        c.send(HeadersFrame(1, enc.encode(req), flags=["END_HEADERS", "END_STREAM"]).serialize())
        # long enough for the proxy's first connection to the backend on a
        # busy machine; "ended" says whether the answer came whole
        deadline = time.monotonic() + 30
        ended = lambda: any(s == 1 and fl & 0x1 for t, fl, s, p in c.seen if t in (0x0, 0x1))
        while not ended() and time.monotonic() < deadline and not c.closed:
            c.pump(0.1)
        d = hpack.Decoder()
        never, status, body = [], None, b""
        for t, fl, s, p in c.seen:
            if s != 1:
                continue
            if t == 0x1 and fl & 0x4:
                # (rampart pads nothing, nor sends priority: the block is the payload)
                for h in d.decode(p):
                    n = h[0].decode() if isinstance(h[0], bytes) else h[0]
                    if n == ":status":
                        status = h[1].decode() if isinstance(h[1], bytes) else h[1]
                    if isinstance(h, hpack.NeverIndexedHeaderTuple):
                        never.append(n)
            elif t == 0x0:
                body += p
        print(json.dumps({"status": status, "never": never, "body": body.decode(errors="replace"),
                          "ended": ended(), "closed": c.closed, "rst": c.rst(), "goaway": c.goaway()}))
        return
    if cmd == "heads":
        # one decoder for the connection, as a client keeps it: whatever the
        # server's blocks ask of the dynamic table shows in it
        d = hpack.Decoder()
        out = []
        for i in range(int(arg)):
            sid = 1 + 2 * i
            c.send(HeadersFrame(sid, enc.encode(request_headers(host)),
                                flags=["END_HEADERS", "END_STREAM"]).serialize())
            deadline = time.monotonic() + 5
            block = None
            while block is None and time.monotonic() < deadline and not c.closed:
                c.pump(0.1)
                for t, fl, s, p in c.seen:
                    # HEADERS with END_HEADERS (these heads fit one frame)
                    if t == 0x1 and s == sid and fl & 0x4:
                        pad = p[0] if fl & 0x8 else 0
                        block = p[1:len(p) - pad] if fl & 0x8 else p
                        if fl & 0x20:
                            block = block[5:]
            if block is None:
                out.append({"stream": sid, "error": "no HEADERS", "closed": c.closed})
                break
            fields = [[n.decode() if isinstance(n, bytes) else n,
                       v.decode() if isinstance(v, bytes) else v] for n, v in d.decode(block)]
            out.append({"stream": sid, "fields": fields, "block_bytes": len(block),
                        "table_entries": len(d.header_table.dynamic_entries)})
        print(json.dumps({"responses": out}))
        return
    if cmd == "idle":
        block = enc.encode(request_headers(host))
        c.send(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        deadline = time.monotonic() + float(arg)
        while time.monotonic() < deadline and not c.goaway() and not c.closed:
            c.pump(0.1)
        print(json.dumps({"goaway": c.goaway(), "statuses": c.statuses(), "closed": c.closed}))
    elif cmd == "rapid-reset":
        n = int(arg)
        sent = 0
        for i in range(n):
            sid = 1 + 2 * i
            block = enc.encode(request_headers(host))
            data = HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
            # RST_STREAM(CANCEL)
            data += (4).to_bytes(3, "big") + bytes([0x3, 0]) + sid.to_bytes(4, "big") + (8).to_bytes(4, "big")
            if not c.send(data):
                break
            sent += 1
            # read as we go: a server that gives up sends GOAWAY and closes, and
            # the reset our unread frames then cause could discard its GOAWAY
            c.pump(0)
            if c.goaway() or c.closed:
                break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not c.goaway() and not c.closed:
            c.pump(0.1)
        print(json.dumps({"sent": sent, "goaway": c.goaway(), "closed": c.closed}))
    elif cmd == "rapid-reset-held":
        # the resets held back a moment, so the requests have reached the
        # backend before they are cancelled (the pause is the attack's shape)
        n = int(arg)
        sent = 0
        sid = 1
        while sent < n and not c.goaway() and not c.closed:
            ids = []
            data = b""
            for _ in range(50):
                block = enc.encode(request_headers(host, "/slow?ms=5000"))
                data += HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
                ids.append(sid)
                sid += 2
            if not c.send(data):
                break
            c.pump(0.01)
            rst = b"".join((4).to_bytes(3, "big") + bytes([0x3, 0]) + i.to_bytes(4, "big")
                           + (8).to_bytes(4, "big") for i in ids)
            if not c.send(rst):
                break
            sent += len(ids)
            c.pump(0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not c.goaway() and not c.closed:
            c.pump(0.1)
        print(json.dumps({"sent": sent, "goaway": c.goaway(), "closed": c.closed}))
    elif cmd == "continuation":
        n = int(arg)
        block = enc.encode(request_headers(host))
        c.send(HeadersFrame(1, block, flags=[]).serialize())
        sent = 0
        filler = enc.encode([("x-junk-%d" % i, "a" * 1000) for i in range(8)])
        for i in range(n):
            flags = ["END_HEADERS"] if i == n - 1 else []
            if not c.send(ContinuationFrame(1, filler, flags=flags).serialize()):
                break
            sent += 1
            # a moment per frame: the server reads each before the next comes, so
            # when it gives up there is nothing unread to turn its close into a reset
            c.pump(0.002)
            if c.goaway() or c.closed:
                break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not c.goaway() and not c.closed and not c.rst():
            c.pump(0.1)
        print(json.dumps({"sent": sent, "goaway": c.goaway(), "rst": c.rst(), "closed": c.closed,
                          "statuses": c.statuses()}))
    elif cmd == "big-headers":
        size = int(arg)
        extra = [("x-big-%d" % i, "b" * 1000) for i in range(size // 1000)]
        block = enc.encode(request_headers(host, extra=extra))
        # split into frames of at most 16 KiB
        chunks = [block[i:i + 16000] for i in range(0, len(block), 16000)]
        for i, ch in enumerate(chunks):
            last = i == len(chunks) - 1
            if i == 0:
                f = HeadersFrame(1, ch, flags=(["END_HEADERS"] if last else []) + ["END_STREAM"])
            else:
                f = ContinuationFrame(1, ch, flags=["END_HEADERS"] if last else [])
            c.send(f.serialize())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not c.goaway() and not c.closed and not c.rst() and not c.statuses():
            c.pump(0.1)
        print(json.dumps({"goaway": c.goaway(), "rst": c.rst(), "closed": c.closed, "statuses": c.statuses()}))


if __name__ == "__main__":
    main()
