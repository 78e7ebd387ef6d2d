#!/usr/bin/python3
"""RFC 9113 conformance cases in the manner of h2spec, written with Debian's
python3-h2 (hpack, hyperframe): each case opens a connection, sends frames a
conforming server must answer with a given error, and checks the error code.

  conformance.py HOST PORT [--tls SNI]     prints one JSON line per case

A case expects a connection error (GOAWAY with the code), a stream error
(RST_STREAM with the code, or GOAWAY with it: RFC 9113 5.4.1 lets a server
treat a stream error as a connection error), or "ok" (a 200 and no error).
"""
import json, socket, ssl, sys, time
import hpack

sys.path.insert(0, __import__("os").path.dirname(__file__))

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, COMPRESSION_ERROR = 0x6, 0x9
DATA, HEADERS, PRIORITY, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 2, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(t, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload


def setting(k, v):
    return k.to_bytes(2, "big") + v.to_bytes(4, "big")


class Conn:
    def __init__(self, host, port, sni):
        s = socket.create_connection((host, port), timeout=5)
        if sni:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            s = ctx.wrap_socket(s, server_hostname=sni)
        self.s = s
        self.buf = b""
        self.frames = []
        self.closed = False
        self.enc = hpack.Encoder()
        self.send(PREFACE + frame(SETTINGS, 0, 0, b""))
        # the server's SETTINGS, acked, and the ack of ours
        self.wait(lambda: any(f[0] == SETTINGS and f[1] & ACK for f in self.frames), 2)

    def send(self, data):
        try:
            self.s.sendall(data)
        except OSError:
            self.closed = True

    def pump(self, wait):
        self.s.settimeout(wait)
        try:
            d = self.s.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return
        except OSError:
            self.closed = True
            return
        if not d:
            self.closed = True
            return
        self.buf += d
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + n:
                break
            t, fl, sid, p = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF, self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]
            if t == SETTINGS and not fl & ACK:
                self.send(frame(SETTINGS, ACK, 0, b""))
            if t == PING and not fl & ACK:
                self.send(frame(PING, ACK, 0, p))
            self.frames.append((t, fl, sid, p))

    def wait(self, cond, secs):
        deadline = time.time() + secs
        while time.time() < deadline and not cond() and not self.closed:
            self.pump(0.05)
        return cond()

    def outcome(self, sid):
        """What the server did: ("goaway", code), ("rst", code), ("status", s) or ("nothing",)."""
        def find():
            for t, fl, fsid, p in self.frames:
                if t == GOAWAY:
                    return ("goaway", int.from_bytes(p[4:8], "big"))
                if t == RST and fsid == sid:
                    return ("rst", int.from_bytes(p[0:4], "big"))
            for t, fl, fsid, p in self.frames:
                if t == HEADERS and fsid == sid:
                    try:
                        hs = dict((k.decode() if isinstance(k, bytes) else k, v) for k, v in hpack.Decoder().decode(p))
                        return ("status", str(hs.get(":status", b"").decode() if isinstance(hs.get(":status"), bytes) else hs.get(":status")))
                    except Exception:
                        return ("status", "?")
            return None
        self.wait(lambda: find() is not None, 2)
        r = find()
        if r is None:
            return ("closed",) if self.closed else ("nothing",)
        return r

    def headers(self, extra=None, pseudo=None):
        h = pseudo if pseudo is not None else [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
        return self.enc.encode(h + (extra or []))


def req(c, sid, flags=END_STREAM | END_HEADERS, **kw):
    return frame(HEADERS, flags, sid, c.headers(**kw))


CASES = [
    # (name, RFC section, expected, send(c) -> stream id to watch)
    ("DATA frame over SETTINGS_MAX_FRAME_SIZE", "4.2", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + frame(DATA, 0, 1, b"x" * 16385)), 1)[1]),
    ("HEADERS frame over SETTINGS_MAX_FRAME_SIZE", "4.2", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.headers() + b"\x00" * 16385)), 1)[1]),
    ("even stream id from the client", "5.1.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 2)), 2)[1]),
    ("a stream id lower than one already used", "5.1.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 5) + req(c, 3)), 3)[1]),
    ("DATA on an idle stream", "5.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(DATA, END_STREAM, 1, b"x")), 1)[1]),
    ("RST_STREAM on an idle stream", "6.4", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(RST, 0, 1, (8).to_bytes(4, "big"))), 1)[1]),
    ("DATA on a stream the client half-closed", "5.1", ("stream", STREAM_CLOSED),
     lambda c: (c.send(req(c, 1) + frame(DATA, END_STREAM, 1, b"x")), 1)[1]),
    ("WINDOW_UPDATE of 0 on the connection", "6.9", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(WINDOW_UPDATE, 0, 0, (0).to_bytes(4, "big"))), 0)[1]),
    ("WINDOW_UPDATE of 0 on a stream", "6.9", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + frame(WINDOW_UPDATE, 0, 1, (0).to_bytes(4, "big"))), 1)[1]),
    ("connection window over 2^31-1", "6.9.1", ("conn", FLOW_CONTROL_ERROR),
     lambda c: (c.send(frame(WINDOW_UPDATE, 0, 0, (0x7FFFFFFF).to_bytes(4, "big"))), 0)[1]),
    ("stream window over 2^31-1", "6.9.1", ("stream", FLOW_CONTROL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + frame(WINDOW_UPDATE, 0, 1, (0x7FFFFFFF).to_bytes(4, "big"))), 1)[1]),
    ("SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1", "6.5.2", ("conn", FLOW_CONTROL_ERROR),
     lambda c: (c.send(frame(SETTINGS, 0, 0, setting(0x4, 0x80000000))), 0)[1]),
    ("SETTINGS_MAX_FRAME_SIZE under 16384", "6.5.2", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(SETTINGS, 0, 0, setting(0x5, 16383))), 0)[1]),
    ("SETTINGS_ENABLE_PUSH of 2", "6.5.2", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(SETTINGS, 0, 0, setting(0x2, 2))), 0)[1]),
    ("SETTINGS whose length is not a multiple of 6", "6.5", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00")), 0)[1]),
    ("SETTINGS on a stream", "6.5", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(SETTINGS, 0, 1, b"")), 0)[1]),
    ("SETTINGS ack with a payload", "6.5", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(SETTINGS, ACK, 0, setting(0x3, 1))), 0)[1]),
    ("PING whose length is not 8", "6.7", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(PING, 0, 0, b"1234567")), 0)[1]),
    ("WINDOW_UPDATE whose length is not 4", "6.9", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")), 0)[1]),
    ("RST_STREAM whose length is not 4", "6.4", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + frame(RST, 0, 1, b"\x00\x00\x08")), 1)[1]),
    ("GOAWAY shorter than 8 octets", "4.2", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(GOAWAY, 0, 0, b"\x00\x00\x00\x00")), 0)[1]),
    ("PING on a stream", "6.7", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(PING, 0, 1, b"12345678")), 0)[1]),
    ("GOAWAY on a stream", "6.8", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(GOAWAY, 0, 1, (0).to_bytes(8, "big"))), 0)[1]),
    ("CONTINUATION without HEADERS", "6.10", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(CONTINUATION, END_HEADERS, 1, c.headers())), 1)[1]),
    ("a frame between HEADERS and its CONTINUATION", "6.10", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(HEADERS, END_STREAM, 1, c.headers()) + frame(PING, 0, 0, b"12345678")), 1)[1]),
    ("PRIORITY whose length is not 5", "6.3", ("stream", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00")), 1)[1]),
    ("HPACK: an index past the tables", "4.3", ("conn", COMPRESSION_ERROR),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\xff\x7f")), 1)[1]),
    ("HPACK: a table size update over SETTINGS_HEADER_TABLE_SIZE", "4.3", ("conn", COMPRESSION_ERROR),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x3f\xe1\xff\x03" + c.headers())), 1)[1]),
    ("HPACK: a table size update within the limit", "4.3", ("ok",),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x3f\xe1\x1f" + c.headers())), 1)[1]),
    ("an upper-case header name", "8.2.1", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, extra=[("X-Upper", "a")])), 1)[1]),
    ("a connection-specific header", "8.2.2", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, extra=[("connection", "keep-alive")])), 1)[1]),
    ("TE other than trailers", "8.2.2", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, extra=[("te", "gzip")])), 1)[1]),
    ("no :path", "8.3.1", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, pseudo=[(":method", "GET"), (":scheme", "http"), (":authority", "x")])), 1)[1]),
    ("an unknown pseudo-header", "8.3", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, pseudo=[(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/"), (":foo", "bar")])), 1)[1]),
    ("a pseudo-header after a regular header", "8.3", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, pseudo=[(":method", "GET"), (":scheme", "http"), ("x-a", "b"), (":authority", "x"), (":path", "/")])), 1)[1]),
    ("a duplicated pseudo-header", "8.3", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, pseudo=[(":method", "GET"), (":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")])), 1)[1]),
    ("content-length that the DATA does not match", "8.1.1", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS, pseudo=[(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/")], extra=[("content-length", "10")]) + frame(DATA, END_STREAM, 1, b"abc")), 1)[1]),
    ("a frame of an unknown type is ignored", "4.1", ("ok",),
     lambda c: (c.send(frame(0x20, 0, 0, b"whatever") + req(c, 1)), 1)[1]),
    ("a plain request", "8.1", ("ok",),
     lambda c: (c.send(req(c, 1)), 1)[1]),
]


def judge(expected, got):
    kind = expected[0]
    if kind == "ok":
        return got == ("status", "200")
    code = expected[1]
    if kind == "conn":
        return got == ("goaway", code)
    # a stream error, or the same code as a connection error (RFC 9113 5.4.1)
    return got in (("rst", code), ("goaway", code))


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    sni = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--tls" else None
    for name, section, expected, act in CASES:
        try:
            c = Conn(host, port, sni)
            sid = act(c)
            got = c.outcome(sid)
        except Exception as e:  # a case that cannot run is a failure, with why
            got = ("error", repr(e))
        print(json.dumps({"case": name, "section": section, "expected": list(expected),
                          "got": list(got), "pass": judge(expected, tuple(got))}), flush=True)


if __name__ == "__main__":
    main()
