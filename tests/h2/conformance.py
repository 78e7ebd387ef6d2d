#!/usr/bin/python3
"""RFC 9113 (HTTP/2) and RFC 7541 (HPACK) conformance cases in the manner of
h2spec, written with Debian's python3-h2 (hpack; frames are built by hand): each
case opens a connection, sends frames, and checks what the server does.

  conformance.py HOST PORT [--tls SNI] [NAME...]   one JSON line per case (only
                                                    the cases whose name contains
                                                    a NAME, if given)

The server under test is rampart in front of an HTTP/1.1 backend answering 200 to
everything; the flow-control cases ("data") need its response to "/" to have a
body of at least 3 octets (tests/common's Backend answers its name, "pod"), and
one case asks for "/big?bytes=100" (the Backend answers it chunked).

The checklist is h2spec's server suite (sections "http2" 3.5 ... 8.2, "hpack" and
"generic"), re-read against RFC 9113, which obsoletes RFC 7540, plus the MUSTs
RFC 9113 added (8.2.1 field validity, 8.2.2, 8.5 CONNECT, 6.9.2). A case is
(name, section, expected, action): section is the RFC 9113 section ("7541/x.y"
for HPACK), action(c) sends frames on the Conn c and returns the stream id to
watch. Expected kinds:

  ("conn", CODE|(CODES))   a connection error: GOAWAY with the code
  ("stream", CODE|(CODES)) a stream error: RST_STREAM with the code on the stream,
                           or GOAWAY with it (RFC 9113 5.4.1 lets a server treat
                           a stream error as a connection error)
  ("malformed",)           RFC 9113 8.1.1: a stream error PROTOCOL_ERROR (RST_STREAM
                           or GOAWAY), or a 4xx response ("a server MAY send an HTTP
                           response prior to closing or resetting the stream"); a
                           200 means the proxy forwarded it, which it MUST NOT
  ("ok",)                  the request is served: a 200 on the stream
  ("ping-ack",)            the connection lives on: our PING (payload PINGDATA),
                           sent last, comes back with ACK and the same payload
  ("ping-ack-or-close",)   the same, or the connection is closed without GOAWAY
                           carrying an error (h2spec's VerifyPingFrameOrConnectionClose)
  ("settings-ack",)        a SETTINGS frame with ACK answers ours
  ("server-preface",)      the first frame the server sends is SETTINGS without ACK
  ("server-settings",)     the values in the server's SETTINGS are allowed (6.5.2:
                           no SETTINGS_ENABLE_PUSH but 0, frame size and window in range)
  ("response-fields",)     a 200 whose field section follows 8.2, 8.2.1, 8.2.2 and
                           8.3: lower-case valid names, no connection-specific
                           field, one :status and no other pseudo-header, first
  ("ok-no-content",)       a 200 with no content in DATA (the answer to HEAD)
  ("quiet",)               after the client's RST_STREAM the server sends nothing
                           more on the stream (6.4), and no RST_STREAM (5.4.2): our
                           PING comes back and nothing arrives on it for QUIET s
  ("closed",)              the connection is closed (a GOAWAY before is allowed):
                           an invalid preface (RFC 9113 3.4 lets GOAWAY be omitted),
                           and the close that MUST follow a GOAWAY (5.4.1)
  ("data", N)              the first DATA frame on the stream is N octets long
                           (flow control: the server obeys the window we give it)
  ("data-total", N)        the stream ends with N octets of DATA in all
  ("info", KIND)           RFC 9113 turned the 7540 MUST into a MAY or SHOULD (or
                           dropped it): the case runs and reports "met" (did the
                           server do it), but it passes either way ("informational")

Every JSON line has "case", "section", "expected", "got" and "pass"; a case in
KNOWN (a server behaviour the RFC allows, or one a proxy cannot be tested on) has
"known": the reason, "met": the raw judgement, and passes. tests/h2/KNOWN.md has
the policy, the MUSTs this suite cannot reach, and why each informational case is
not required.
"""
import json, socket, ssl, sys, time
import hpack

sys.path.insert(0, __import__("os").path.dirname(__file__))

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR = 0x8, 0x9
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
PINGDATA = b"h2spec\x00\x00"
WAIT = 2.0  # the most a case waits for the server's answer
QUIET = 0.5  # how long a stream must stay silent
CONNECTION_SPECIFIC = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")


def frame(t, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload


def setting(k, v):
    return k.to_bytes(2, "big") + v.to_bytes(4, "big")


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(setting(k, v) for k, v in pairs))


def ping(data=PINGDATA, flags=0, sid=0):
    return frame(PING, flags, sid, data)


def rst(sid, code=CANCEL):
    return frame(RST, 0, sid, code.to_bytes(4, "big"))


def wu(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, inc.to_bytes(4, "big"))


def prio_fields(dep=0, weight=255, exclusive=False):
    return (dep | (0x80000000 if exclusive else 0)).to_bytes(4, "big") + bytes([weight])


def priority(sid, dep=0, weight=255, exclusive=False):
    return frame(PRIORITY, 0, sid, prio_fields(dep, weight, exclusive))


def data(sid, payload=b"test", end=True, pad=None):
    flags = END_STREAM if end else 0
    if pad is not None:
        return frame(DATA, flags | PADDED, sid, bytes([len(pad)]) + payload + pad)
    return frame(DATA, flags, sid, payload)


def cont(sid, block, end=True):
    return frame(CONTINUATION, END_HEADERS if end else 0, sid, block)


def hpack_int(value, prefix_bits, first):
    """RFC 7541 5.1 integer with `first` as the pattern above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = [first | limit], value - limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(out + [value])


class Skip(Exception):
    """The case does not apply to this server (h2spec's ErrSkipped)."""


class CaseFail(Exception):
    """A step before the final check already went wrong."""


class Conn:
    def __init__(self, host, port, sni, handshake=True):
        s = socket.create_connection((host, port), timeout=5)
        if sni:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            s = ctx.wrap_socket(s, server_hostname=sni)
        self.s = s
        self.buf = b""
        self.frames = []  # (type, flags, stream, payload, decoded header list or None)
        self.closed = False
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.block = None  # a server field block waiting for its CONTINUATION
        self.server_settings = {}
        self.mark = 0  # the checks look at frames from here on
        if handshake:
            self.send(PREFACE + frame(SETTINGS, 0, 0, b""))
            # the server's SETTINGS (acked by pump) and the ack of ours
            self.wait(lambda: self.acks() >= 1 and self.server_settings_seen(), WAIT)
            self.mark = len(self.frames)

    def send(self, data):
        try:
            self.s.sendall(data)
        except OSError:
            self.closed = True

    def acks(self, since=0):
        return sum(1 for f in self.frames[since:] if f[0] == SETTINGS and f[1] & ACK)

    def server_settings_seen(self):
        return any(f[0] == SETTINGS and not f[1] & ACK for f in self.frames)

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
                for i in range(0, len(p) - 5, 6):
                    self.server_settings[int.from_bytes(p[i:i + 2], "big")] = int.from_bytes(p[i + 2:i + 6], "big")
                self.send(frame(SETTINGS, ACK, 0, b""))
            if t == PING and not fl & ACK:
                self.send(frame(PING, ACK, 0, p))
            self.frames.append((t, fl, sid, p, self.decode(t, fl, p)))

    def decode(self, t, fl, p):
        """The server's field blocks, decoded in order with one decoder."""
        if t == HEADERS:
            if fl & PADDED:
                p = p[1:len(p) - p[0]]
            if fl & PRIO:
                p = p[5:]
            self.block = p
        elif t == CONTINUATION and self.block is not None:
            self.block += p
        else:
            return None
        if not fl & END_HEADERS:
            return None
        block, self.block = self.block, None
        try:
            return [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                    for k, v in self.dec.decode(block)]
        except Exception as e:
            return [(":decode-error", repr(e))]

    def wait(self, cond, secs):
        deadline = time.time() + secs
        while time.time() < deadline and not cond() and not self.closed:
            self.pump(0.05)
        if not cond() and self.closed:
            self.pump(0.01)  # what was read before the close
        return cond()

    def seen(self):
        return self.frames[self.mark:]

    def goaway(self):
        for f in self.seen():
            if f[0] == GOAWAY and len(f[3]) >= 8:
                return int.from_bytes(f[3][4:8], "big")
        return None

    def rst_code(self, sid):
        for f in self.seen():
            if f[0] == RST and f[2] == sid and len(f[3]) == 4:
                return int.from_bytes(f[3], "big")
        return None

    def status(self, sid):
        """The final (non-1xx) :status on the stream, and whether the stream ended."""
        st, ended = None, False
        for f in self.seen():
            if f[2] != sid:
                continue
            if f[0] == HEADERS and f[4] is not None and st is None:
                s = dict(f[4]).get(":status")
                if s is not None and not s.startswith("1"):
                    st = s
            if f[0] in (HEADERS, DATA) and f[1] & END_STREAM:
                ended = True
        return st, ended

    def data_frames(self, sid):
        return [f for f in self.seen() if f[0] == DATA and f[2] == sid]

    def ping_acked(self, payload=PINGDATA):
        return any(f[0] == PING and f[1] & ACK and f[3] == payload for f in self.seen())

    def wait_acks(self, n=1):
        """Waits for n SETTINGS acks after the mark (ours applied)."""
        return self.wait(lambda: self.acks(self.mark) >= n, WAIT)

    def headers(self, extra=None, pseudo=None, method="GET"):
        h = pseudo if pseudo is not None else common(method)
        return self.enc.encode(h + (extra or []))


def common(method="GET"):
    return [(":method", method), (":scheme", "http"), (":authority", "x"), (":path", "/")]


def dummy(n):
    return [("x-dummy%d" % i, "d" * 64) for i in range(n)]


def req(c, sid, flags=END_STREAM | END_HEADERS, **kw):
    return frame(HEADERS, flags, sid, c.headers(**kw))


def post(c, sid, end_stream=False, extra=None):
    flags = END_HEADERS | (END_STREAM if end_stream else 0)
    return frame(HEADERS, flags, sid, c.headers(method="POST", extra=extra))


def raw(act):
    """Marks an action that talks to a connection without the handshake."""
    act.raw = True
    return act


def info(kind):
    return ("info", kind)


# ---- actions that take more than one line

def with_ping(*frames_):
    def act(c):
        c.send(b"".join(f(c) if callable(f) else f for f in frames_) + ping())
        return 0
    return act


def finished_stream(c, sid=1):
    """A GET on sid, answered and ended: the stream is closed both ways."""
    c.send(req(c, sid))
    if not c.wait(lambda: c.status(sid)[1], WAIT):
        raise CaseFail("the first request was not answered: %s" % (c.status(sid),))
    c.mark = len(c.frames)


def window_then_request(c, *values):
    """SETTINGS_INITIAL_WINDOW_SIZE set to each value in turn, then a GET on 1."""
    c.send(settings(*[(INITIAL_WINDOW_SIZE, v) for v in values]))
    if not c.wait_acks():
        raise CaseFail("SETTINGS not acknowledged")
    c.mark = len(c.frames)
    c.send(req(c, 1))
    return 1


def window_zero_then_one(c):
    c.send(settings((INITIAL_WINDOW_SIZE, 0)))
    if not c.wait_acks():
        raise CaseFail("SETTINGS not acknowledged")
    c.send(req(c, 1))
    if not c.wait(lambda: c.status(1)[0] is not None, WAIT):
        raise CaseFail("no response HEADERS on stream 1")
    c.mark = len(c.frames)
    c.send(settings((INITIAL_WINDOW_SIZE, 1)))
    return 1


def negative_window(c):
    """RFC 9113 6.9.2: a window 2, 2 octets sent; SETTINGS 1 makes it -1; a
    WINDOW_UPDATE of 1 brings it to 0 (nothing may be sent), another to 1."""
    c.send(settings((INITIAL_WINDOW_SIZE, 2)))
    if not c.wait_acks():
        raise CaseFail("SETTINGS not acknowledged")
    c.mark = len(c.frames)
    c.send(req(c, 1))
    if not c.wait(lambda: sum(len(f[3]) for f in c.data_frames(1)) >= 2, WAIT):
        raise CaseFail("no 2 octets of DATA with a window of 2: %s" % [len(f[3]) for f in c.data_frames(1)])
    if sum(len(f[3]) for f in c.data_frames(1)) > 2:
        raise CaseFail("more DATA than the window of 2 allowed")
    c.mark = len(c.frames)
    c.send(settings((INITIAL_WINDOW_SIZE, 1)))
    if not c.wait_acks():
        raise CaseFail("second SETTINGS not acknowledged")
    c.mark = len(c.frames)
    c.send(wu(1, 1))
    if c.wait(lambda: any(len(f[3]) for f in c.data_frames(1)), 0.3):
        raise CaseFail("DATA sent while the stream window was 0 (-1 + 1): the negative window was not tracked")
    c.mark = len(c.frames)
    c.send(wu(1, 1))
    return 1


def connection_window(c):
    """RFC 9113 6.9.1: stream windows opened wide, the connection's left at
    65,535: no more DATA than that until a WINDOW_UPDATE on stream 0."""
    c.send(settings((INITIAL_WINDOW_SIZE, 0x7FFFFFFF)))
    if not c.wait_acks():
        raise CaseFail("SETTINGS not acknowledged")
    c.mark = len(c.frames)
    c.send(req(c, 1, pseudo=[(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/big?bytes=100000")]))
    total = lambda: sum(len(f[3]) for f in c.data_frames(1))
    c.wait(lambda: total() >= 65535 or c.status(1)[1], WAIT)
    c.wait(lambda: False, 0.2)  # what the window does not allow would come now
    if total() > 65535:
        raise CaseFail("%d octets of DATA with a connection window of 65535" % total())
    if c.status(1)[1] or total() == 0:
        raise CaseFail("no 100000-octet body to test with: %d octets, ended %s" % (total(), c.status(1)[1]))
    c.send(wu(0, 100000))
    return 1


def concurrency(c):
    n = c.server_settings.get(MAX_CONCURRENT_STREAMS)
    if n is None:
        raise Skip("no SETTINGS_MAX_CONCURRENT_STREAMS: unlimited")
    c.send(settings((INITIAL_WINDOW_SIZE, 0)))  # responses cannot finish
    block = c.headers()
    c.send(b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, block) for i in range(n + 1)))
    return 1 + 2 * n


def window_over_max_by_settings(c):
    """RFC 9113 6.9.2: a stream window at 2^31-1, then SETTINGS_INITIAL_WINDOW_SIZE
    raised by 1 pushes it over: FLOW_CONTROL_ERROR on the connection."""
    c.send(post(c, 1) + wu(1, 0x7FFFFFFF - 65535) + settings((INITIAL_WINDOW_SIZE, 65536)))
    return 1


def table_size_over_limit(c):
    limit = c.server_settings.get(HEADER_TABLE_SIZE, 4096)
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, hpack_int(limit + 1, 5, 0x20) + c.headers()))
    return 1


def headers_padded_bad(c):
    block = c.headers()
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, bytes([len(block) + 2]) + block))
    return 1


# HPACK representations from h2spec generic/5 (user-agent or x-test: h2spec)
HPACK_OK = [
    ("indexed header field (user-agent, empty)", "7541/6.1", b"\xba"),
    ("literal with incremental indexing, indexed name, Huffman", "7541/6.2.1",
     b"\x40\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    ("literal with incremental indexing, new name", "7541/6.2.1",
     b"\x40\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("literal with incremental indexing, new name x-test", "7541/6.2.1",
     b"\x40\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("literal with incremental indexing, new name, Huffman", "7541/6.2.1",
     b"\x40\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    ("literal without indexing, new name user-agent", "7541/6.2.2",
     b"\x00\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("literal without indexing, Huffman name and value", "7541/6.2.2",
     b"\x00\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    ("literal without indexing, new name x-test", "7541/6.2.2",
     b"\x00\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("literal without indexing, new name x-test, Huffman", "7541/6.2.2",
     b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
    ("literal never indexed, new name user-agent", "7541/6.2.3",
     b"\x10\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("literal never indexed, Huffman name and value", "7541/6.2.3",
     b"\x10\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"),
    ("literal never indexed, new name x-test", "7541/6.2.3",
     b"\x10\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"),
    ("literal never indexed, new name x-test, Huffman", "7541/6.2.3",
     b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"),
]


def appended(rep):
    return lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, c.headers() + rep)), 1)[1]


def prepended(rep):
    return lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, rep + c.headers())), 1)[1]


def malformed_req(method="GET", extra=None, pseudo=None):
    return lambda c: (c.send(req(c, 1, method=method, extra=extra, pseudo=pseudo)), 1)[1]


CASES = [
    # (name, RFC section, expected, send(c) -> stream id to watch)

    # -- 3.4 (h2spec http2/3.5, generic/1): the connection preface
    ("the server's preface is a SETTINGS frame", "3.4", ("server-preface",),
     raw(lambda c: (c.send(PREFACE + settings((INITIAL_WINDOW_SIZE, 65535))), 0)[1])),
    ("an invalid connection preface", "3.4", ("closed",),
     raw(lambda c: (c.send(b"INVALID CONNECTION PREFACE\r\n\r\n"), 0)[1])),
    ("a preface whose second line is wrong", "3.4", ("closed",),
     raw(lambda c: (c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings()), 0)[1])),
    ("a preface not followed by SETTINGS", "3.4", ("closed",),
     raw(lambda c: (c.send(PREFACE + ping()), 0)[1])),

    ("the server's SETTINGS values are allowed", "6.5.2", ("server-settings",),
     raw(lambda c: (c.send(PREFACE + settings()), 0)[1])),

    # -- 4.1: frame format
    ("a frame of an unknown type is ignored", "4.1", ("ok",),
     lambda c: (c.send(frame(0x20, 0, 0, b"whatever") + req(c, 1)), 1)[1]),
    ("an unknown frame type is ignored (PING answered)", "4.1", ("ping-ack",),
     with_ping(frame(0x16, 0, 0, b"\x00" * 8))),
    ("undefined flags are ignored", "4.1", ("ping-ack",),
     lambda c: (c.send(ping(flags=0x16)), 0)[1]),
    ("the reserved bit is ignored", "4.1", ("ping-ack",),
     lambda c: (c.send(frame(PING, 0x16, 0x80000000, PINGDATA)), 0)[1]),

    # -- 4.2: frame size
    ("a DATA frame of 2^14 octets is accepted", "4.2", ("ok",),
     lambda c: (c.send(post(c, 1) + data(1, b"x" * 16384)), 1)[1]),
    # a stream error or a connection error (DATA is not a frame that "could alter
    # the state of the entire connection")
    ("DATA frame over SETTINGS_MAX_FRAME_SIZE", "4.2", ("stream", FRAME_SIZE_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + frame(DATA, 0, 1, b"x" * 16385)), 1)[1]),
    ("HEADERS frame over SETTINGS_MAX_FRAME_SIZE", "4.2", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.headers() + b"\x00" * 16385)), 1)[1]),
    ("HEADERS of many fields over SETTINGS_MAX_FRAME_SIZE", "4.2", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.headers(extra=[("x-big%d" % i, "v" * 4000) for i in range(5)]))), 1)[1]),
    ("GOAWAY shorter than 8 octets", "4.2", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(GOAWAY, 0, 0, b"\x00\x00\x00\x00")), 0)[1]),

    # -- 4.3: field section compression
    ("HPACK: an index past the tables", "4.3", ("conn", COMPRESSION_ERROR),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\xff\x7f")), 1)[1]),
    ("HPACK: a literal without its length and string", "4.3", ("conn", COMPRESSION_ERROR),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x40")), 1)[1]),
    ("HPACK: a table size update over SETTINGS_HEADER_TABLE_SIZE", "4.3", ("conn", COMPRESSION_ERROR),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x3f\xe1\xff\x03" + c.headers())), 1)[1]),
    ("HPACK: a table size update within the limit", "4.3", ("ok",),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x3f\xe1\x1f" + c.headers())), 1)[1]),
    ("a PRIORITY frame inside a field block", "4.3", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=0) + priority(1) + cont(1, c.enc.encode(dummy(1)))), 1)[1]),
    ("HEADERS of another stream inside a field block", "4.3", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=0) + req(c, 3) + cont(1, c.enc.encode(dummy(1)))), 1)[1]),
    ("a frame between HEADERS and its CONTINUATION", "4.3", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(HEADERS, END_STREAM, 1, c.headers()) + ping()), 1)[1]),

    # -- 5.1: stream states
    ("idle: DATA", "5.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(DATA, END_STREAM, 1, b"x")), 1)[1]),
    ("idle: RST_STREAM", "5.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(rst(1)), 1)[1]),
    ("idle: WINDOW_UPDATE", "5.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(wu(1, 100)), 1)[1]),
    ("idle: CONTINUATION", "5.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(CONTINUATION, END_HEADERS, 1, c.headers())), 1)[1]),
    ("idle: PRIORITY is accepted", "5.1", ("ping-ack",),
     with_ping(priority(1))),
    # an even id below the last stream opened is still idle: only a server
    # opens even streams (5.1.1), and rampart opens none
    ("idle: DATA on an even stream", "5.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 3) + frame(DATA, END_STREAM, 2, b"x")), 2)[1]),
    ("idle: RST_STREAM on an even stream", "5.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 3) + rst(2)), 2)[1]),
    ("idle: WINDOW_UPDATE on an even stream", "5.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 3) + wu(2, 100)), 2)[1]),
    ("half-closed (remote): DATA", "5.1", ("stream", STREAM_CLOSED),
     lambda c: (c.send(req(c, 1) + frame(DATA, END_STREAM, 1, b"x")), 1)[1]),
    ("half-closed (remote): HEADERS", "5.1", ("stream", STREAM_CLOSED),
     lambda c: (c.send(req(c, 1) + req(c, 1)), 1)[1]),
    ("half-closed (remote): CONTINUATION", "5.1", ("stream", (STREAM_CLOSED, PROTOCOL_ERROR)),
     lambda c: (c.send(req(c, 1) + cont(1, c.headers())), 1)[1]),
    ("half-closed (remote): WINDOW_UPDATE is accepted", "5.1", ("data", 1),
     lambda c: (c.send(settings((INITIAL_WINDOW_SIZE, 0)) + req(c, 1) + wu(1, 1)), 1)[1]),
    ("half-closed (remote): PRIORITY is accepted", "5.1", ("data", 1),
     lambda c: (c.send(settings((INITIAL_WINDOW_SIZE, 0)) + req(c, 1) + priority(1) + wu(1, 1)), 1)[1]),
    ("half-closed (remote): RST_STREAM is accepted", "5.1", ("ping-ack-or-close",),
     with_ping(lambda c: req(c, 1), rst(1))),
    # the server received RST_STREAM: DATA on a stream not "open" or
    # "half-closed (local)" MUST get STREAM_CLOSED (6.1)
    ("closed by the client's RST_STREAM: DATA", "5.1", ("stream", STREAM_CLOSED),
     lambda c: (c.send(post(c, 1) + rst(1) + data(1)), 1)[1]),
    # HEADERS on a closed stream: not permitted in that state; STREAM_CLOSED (5.1)
    # or PROTOCOL_ERROR (5.1.1, a stream identifier reused)
    ("closed by the client's RST_STREAM: HEADERS", "5.1", ("stream", (STREAM_CLOSED, PROTOCOL_ERROR)),
     lambda c: (c.send(post(c, 1) + rst(1) + req(c, 1)), 1)[1]),
    ("closed by the client's RST_STREAM: CONTINUATION", "5.1", ("stream", (STREAM_CLOSED, PROTOCOL_ERROR)),
     lambda c: (c.send(post(c, 1) + rst(1) + cont(1, c.enc.encode(dummy(1)))), 1)[1]),
    ("closed: DATA", "5.1", ("stream", STREAM_CLOSED),
     lambda c: (finished_stream(c), c.send(data(1)), 1)[2]),
    ("closed: HEADERS", "5.1", ("stream", (STREAM_CLOSED, PROTOCOL_ERROR)),
     lambda c: (finished_stream(c), c.send(req(c, 1)), 1)[2]),
    ("closed: CONTINUATION", "5.1", ("conn", (STREAM_CLOSED, PROTOCOL_ERROR)),
     lambda c: (finished_stream(c), c.send(cont(1, c.enc.encode(dummy(1)))), 1)[2]),
    # RFC 7540 required a connection error STREAM_CLOSED here; RFC 9113 5.1 says MAY
    ("closed: DATA as a connection error (7540)", "5.1", info(("conn", STREAM_CLOSED)),
     lambda c: (finished_stream(c), c.send(data(1)), 1)[2]),
    ("closed: PRIORITY is accepted", "5.1", ("ping-ack",),
     lambda c: (finished_stream(c), c.send(priority(1) + ping()), 0)[2]),

    # -- 5.1.1: stream identifiers
    ("even stream id from the client", "5.1.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 2)), 2)[1]),
    ("a stream id lower than one already used", "5.1.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 5) + req(c, 3)), 3)[1]),

    # -- 5.1.2: stream concurrency
    ("HEADERS over SETTINGS_MAX_CONCURRENT_STREAMS", "5.1.2", ("stream", (PROTOCOL_ERROR, REFUSED_STREAM)),
     concurrency),

    # -- 5.3 (h2spec http2/5.3.1): RFC 9113 deprecated 7540's priority scheme and
    # dropped "a stream cannot depend on itself ... MUST treat as a stream error"
    ("HEADERS that depends on itself", "5.3.2", info(("stream", PROTOCOL_ERROR)),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS | PRIO, 1, prio_fields(1) + c.headers())), 1)[1]),
    ("PRIORITY that depends on itself", "5.3.2", info(("stream", PROTOCOL_ERROR)),
     lambda c: (c.send(priority(1, dep=1)), 1)[1]),

    # -- 5.4.1: connection error handling
    ("the connection is closed after a connection error", "5.4.1", ("closed",),
     lambda c: (c.send(ping(sid=3)), 0)[1]),
    ("a connection error is announced with GOAWAY", "5.4.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(ping(sid=3)), 0)[1]),

    # -- 5.5: extending HTTP/2
    ("an unknown extension frame is ignored", "5.5", ("ping-ack",),
     with_ping(frame(0xFF, 0, 0, b"\x00" * 8))),
    ("an unknown extension frame inside a field block", "5.5", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_STREAM) + frame(0xFF, 0, 1, b"\x00" * 8)), 1)[1]),
    ("an unknown SETTINGS identifier is ignored", "6.5.2", ("ping-ack",),
     with_ping(settings((0xFF, 1)))),

    # -- 6.1: DATA
    ("DATA on stream 0", "6.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(data(0)), 0)[1]),
    ("DATA with a pad length over the payload", "6.1", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(post(c, 1, extra=[("content-length", "4")]) + frame(DATA, END_STREAM | PADDED, 1, b"\x06Test")), 1)[1]),
    ("a POST with one DATA frame", "6.1", ("ok",),
     lambda c: (c.send(post(c, 1) + data(1)), 1)[1]),
    ("a POST with two DATA frames", "6.1", ("ok",),
     lambda c: (c.send(post(c, 1) + data(1, end=False) + data(1)), 1)[1]),
    ("a POST with a padded DATA frame", "6.1", ("ok",),
     lambda c: (c.send(post(c, 1) + data(1, pad=b"\x00" * 6)), 1)[1]),

    # -- 6.2: HEADERS
    ("HEADERS on stream 0", "6.2", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 0)), 0)[1]),
    ("HEADERS with a pad length over the payload", "6.2", ("conn", PROTOCOL_ERROR),
     headers_padded_bad),
    ("HEADERS with padding", "6.2", ("ok",),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, b"\x08" + c.headers() + b"\x00" * 8)), 1)[1]),
    ("HEADERS with priority fields", "6.2", ("ok",),
     lambda c: (c.send(frame(HEADERS, END_STREAM | END_HEADERS | PRIO, 1, prio_fields() + c.headers())), 1)[1]),
    ("HEADERS without END_HEADERS, then DATA", "6.2", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(HEADERS, 0, 1, c.headers(method="POST")) + data(1)), 1)[1]),

    # -- 6.3: PRIORITY (deprecated, still parsed)
    ("PRIORITY on stream 0", "6.3", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(priority(0)), 0)[1]),
    ("PRIORITY whose length is not 5", "6.3", ("stream", FRAME_SIZE_ERROR),
     lambda c: (c.send(req(c, 1) + frame(PRIORITY, 0, 1, b"\x80\x00\x00\x01")), 1)[1]),
    ("PRIORITY whose length is not 5, on an idle stream", "6.3", ("stream", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00")), 1)[1]),
    ("PRIORITY on idle stream 3, then HEADERS on stream 1", "6.3", ("ok",),
     lambda c: (c.send(priority(3) + req(c, 1)), 1)[1]),
    ("PRIORITY of weight 1 then HEADERS", "6.3", ("ok",),
     lambda c: (c.send(priority(1, weight=0) + req(c, 1)), 1)[1]),
    ("PRIORITY of weight 256 then HEADERS", "6.3", ("ok",),
     lambda c: (c.send(priority(1, weight=255) + req(c, 1)), 1)[1]),
    ("PRIORITY with a dependency then HEADERS", "6.3", ("ok",),
     lambda c: (c.send(priority(3, dep=1, weight=0) + req(c, 1)), 1)[1]),
    ("PRIORITY exclusive then HEADERS", "6.3", ("ok",),
     lambda c: (c.send(priority(1, weight=0, exclusive=True) + req(c, 1)), 1)[1]),

    # -- 6.4: RST_STREAM
    ("RST_STREAM on stream 0", "6.4", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(rst(0)), 0)[1]),
    ("RST_STREAM on an idle stream", "6.4", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(RST, 0, 1, (8).to_bytes(4, "big"))), 1)[1]),
    ("RST_STREAM whose length is not 4", "6.4", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + frame(RST, 0, 1, b"\x00\x00\x08")), 1)[1]),
    ("RST_STREAM of an open stream is accepted", "6.4", ("ping-ack-or-close",),
     with_ping(lambda c: post(c, 1), rst(1))),
    # "After receiving a RST_STREAM on a stream, the receiver MUST NOT send
    # additional frames for that stream, except for PRIORITY" (6.4); "an endpoint
    # MUST NOT send a RST_STREAM in response to a RST_STREAM frame" (5.4.2)
    ("nothing is sent on an open stream the client reset", "6.4", ("quiet",),
     lambda c: (c.send(post(c, 1) + rst(1) + ping()), 1)[1]),
    ("nothing is sent on a half-closed stream the client reset", "6.4", ("quiet",),
     lambda c: (c.send(req(c, 1) + rst(1) + ping()), 1)[1]),

    # -- 6.5: SETTINGS
    ("SETTINGS whose length is not a multiple of 6", "6.5", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00")), 0)[1]),
    ("SETTINGS of 9 octets", "6.5", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x64\x00\x02\x00")), 0)[1]),
    ("SETTINGS on a stream", "6.5", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(SETTINGS, 0, 1, setting(0x3, 100))), 0)[1]),
    ("SETTINGS ack with a payload", "6.5", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(SETTINGS, ACK, 0, setting(0x3, 1))), 0)[1]),
    ("SETTINGS ack with one octet", "6.5", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(SETTINGS, ACK, 0, b"\x00")), 0)[1]),
    ("SETTINGS of every defined parameter is acknowledged", "6.5", ("settings-ack",),
     lambda c: (c.send(settings((HEADER_TABLE_SIZE, 4096), (ENABLE_PUSH, 1), (MAX_CONCURRENT_STREAMS, 100),
                                (INITIAL_WINDOW_SIZE, 65535), (MAX_FRAME_SIZE, 16384), (MAX_HEADER_LIST_SIZE, 100))), 0)[1]),

    # -- 6.5.2: defined settings
    ("SETTINGS_ENABLE_PUSH of 2", "6.5.2", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(settings((ENABLE_PUSH, 2))), 0)[1]),
    ("SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1", "6.5.2", ("conn", FLOW_CONTROL_ERROR),
     lambda c: (c.send(settings((INITIAL_WINDOW_SIZE, 0x80000000))), 0)[1]),
    ("SETTINGS_MAX_FRAME_SIZE under 16384", "6.5.2", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(settings((MAX_FRAME_SIZE, 16383))), 0)[1]),
    ("SETTINGS_MAX_FRAME_SIZE over 2^24-1", "6.5.2", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(settings((MAX_FRAME_SIZE, 16777216))), 0)[1]),

    # -- 6.5.3: settings synchronization
    ("SETTINGS_INITIAL_WINDOW_SIZE twice in one frame: the last wins", "6.5.3", ("data", 1),
     lambda c: window_then_request(c, 100, 1)),
    ("SETTINGS without ACK is acknowledged", "6.5.3", ("settings-ack",),
     lambda c: (c.send(settings((ENABLE_PUSH, 0))), 0)[1]),

    # -- 6.7: PING
    ("PING is answered with ACK and the same payload", "6.7", ("ping-ack",),
     lambda c: (c.send(ping()), 0)[1]),
    ("PING with ACK is not answered", "6.7", ("ping-ack",),
     lambda c: (c.send(ping(b"invalid\x00", flags=ACK) + ping()), 0)[1]),
    ("PING on a stream", "6.7", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(ping(sid=1)), 0)[1]),
    ("PING whose length is not 8", "6.7", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(PING, 0, 0, b"1234567")), 0)[1]),

    # -- 6.8: GOAWAY
    ("GOAWAY on a stream", "6.8", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(GOAWAY, 0, 1, (0).to_bytes(8, "big"))), 0)[1]),
    # h2spec generic/3.8 expects the close; RFC 9113 does not require the
    # receiver of a GOAWAY to close (only to open no further streams)
    ("a GOAWAY from the client is accepted (and the server closes)", "6.8", info(("closed",)),
     lambda c: (c.send(frame(GOAWAY, 0, 0, (0).to_bytes(8, "big") + b"h2spec")), 0)[1]),

    # -- 6.9: WINDOW_UPDATE
    ("WINDOW_UPDATE of 0 on the connection", "6.9", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(wu(0, 0)), 0)[1]),
    ("WINDOW_UPDATE of 0 on a stream", "6.9", ("stream", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + wu(1, 0)), 1)[1]),
    ("WINDOW_UPDATE whose length is not 4", "6.9", ("conn", FRAME_SIZE_ERROR),
     lambda c: (c.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")), 0)[1]),
    ("WINDOW_UPDATE on the connection is accepted", "6.9", ("ping-ack",),
     with_ping(wu(0, 1))),
    ("WINDOW_UPDATE on a stream is accepted", "6.9", ("ok",),
     lambda c: (c.send(req(c, 1) + wu(1, 1)), 1)[1]),

    # -- 6.9.1: the flow-control window
    ("SETTINGS_INITIAL_WINDOW_SIZE of 1: one octet of DATA", "6.9.1", ("data", 1),
     lambda c: window_then_request(c, 1)),
    ("connection window over 2^31-1", "6.9.1", ("conn", FLOW_CONTROL_ERROR),
     lambda c: (c.send(wu(0, 0x7FFFFFFF)), 0)[1]),
    ("connection window over 2^31-1 in two WINDOW_UPDATEs", "6.9.1", ("conn", FLOW_CONTROL_ERROR),
     lambda c: (c.send(wu(0, 0x7FFFFFFF) + wu(0, 0x7FFFFFFF)), 0)[1]),
    ("the server obeys the connection window", "6.9.1", ("data-total", 100000),
     connection_window),
    ("stream window over 2^31-1", "6.9.1", ("stream", FLOW_CONTROL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + wu(1, 0x7FFFFFFF)), 1)[1]),
    ("stream window over 2^31-1 in two WINDOW_UPDATEs", "6.9.1", ("stream", FLOW_CONTROL_ERROR),
     lambda c: (c.send(post(c, 1) + wu(1, 0x7FFFFFFF) + wu(1, 0x7FFFFFFF)), 1)[1]),

    # -- 6.9.2: initial flow-control window size
    ("SETTINGS_INITIAL_WINDOW_SIZE raised after HEADERS", "6.9.2", ("data", 1),
     window_zero_then_one),
    ("SETTINGS_INITIAL_WINDOW_SIZE makes a window negative", "6.9.2", ("data", 1),
     negative_window),
    ("SETTINGS_INITIAL_WINDOW_SIZE pushes a stream window over 2^31-1", "6.9.2", ("conn", FLOW_CONTROL_ERROR),
     window_over_max_by_settings),

    # -- 6.10: CONTINUATION
    ("HEADERS split into HEADERS and CONTINUATION", "6.10", ("ok",),
     lambda c: (lambda b: c.send(frame(HEADERS, END_STREAM, 1, b[:5]) + cont(1, b[5:])))(c.headers()) or 1),
    ("HEADERS split into HEADERS and two CONTINUATIONs", "6.10", ("ok",),
     lambda c: (lambda b: c.send(frame(HEADERS, END_STREAM, 1, b[:5]) + cont(1, b[5:10], False) + cont(1, b[10:])))(c.headers()) or 1),
    ("HEADERS and two CONTINUATIONs of extra fields", "6.10", ("ok",),
     lambda c: (c.send(req(c, 1, flags=END_STREAM) + cont(1, c.enc.encode(dummy(1)), False) + cont(1, c.enc.encode(dummy(1)))), 1)[1]),
    ("CONTINUATION without HEADERS", "6.10", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(CONTINUATION, END_HEADERS, 1, c.headers())), 1)[1]),
    ("CONTINUATION followed by DATA", "6.10", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(frame(HEADERS, 0, 1, c.headers(method="POST")) + cont(1, c.enc.encode(dummy(1)), False) + data(1)), 1)[1]),
    ("CONTINUATION on stream 0", "6.10", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_STREAM) + cont(0, c.enc.encode(dummy(1)))), 1)[1]),
    ("CONTINUATION after HEADERS with END_HEADERS", "6.10", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1) + cont(1, c.enc.encode(dummy(1)))), 1)[1]),
    ("CONTINUATION after CONTINUATION with END_HEADERS", "6.10", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_STREAM) + cont(1, c.enc.encode(dummy(1))) + cont(1, c.enc.encode(dummy(1)))), 1)[1]),
    ("CONTINUATION after DATA", "6.10", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(post(c, 1) + data(1) + cont(1, c.enc.encode(dummy(1)))), 1)[1]),

    # -- 7: error codes: "Unknown or unsupported error codes MUST NOT trigger any
    # special behavior"
    ("GOAWAY with an unknown error code", "7", ("ping-ack-or-close",),
     lambda c: (c.send(frame(GOAWAY, 0, 0, (0).to_bytes(4, "big") + (0xFF).to_bytes(4, "big")) + ping()), 0)[1]),
    ("RST_STREAM with an unknown error code", "7", ("ping-ack",),
     with_ping(lambda c: post(c, 1), rst(1, 0xFF))),

    # -- 8.1: HTTP message framing
    ("a plain request", "8.1", ("ok",),
     lambda c: (c.send(req(c, 1)), 1)[1]),
    # RFC 9110 9.3.2: "the server MUST NOT send content in the response" to HEAD
    ("a HEAD request", "8.1", ("ok-no-content",),
     lambda c: (c.send(req(c, 1, method="HEAD")), 1)[1]),
    # 8.2 "Field names MUST be converted to lowercase", 8.2.2 "An endpoint MUST NOT
    # generate an HTTP/2 message containing connection-specific header fields",
    # 8.3 pseudo-headers: the proxy's translation of the HTTP/1.1 response
    ("the response's fields are valid HTTP/2 fields", "8.2", ("response-fields",),
     lambda c: (c.send(req(c, 1)), 1)[1]),
    ("the fields of a chunked backend response are valid HTTP/2 fields", "8.2.2", ("response-fields",),
     lambda c: (c.send(req(c, 1, pseudo=[(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/big?bytes=100")])), 1)[1]),
    ("a POST request with trailers", "8.1", ("ok",),
     lambda c: (c.send(post(c, 1, extra=[("trailer", "x-test")]) + data(1, end=False)
                       + frame(HEADERS, END_STREAM | END_HEADERS, 1, c.enc.encode([("x-test", "ok")]))), 1)[1]),
    ("a second HEADERS without END_STREAM", "8.1", ("malformed",),
     lambda c: (c.send(post(c, 1) + data(1, end=False) + frame(HEADERS, END_HEADERS, 1, c.enc.encode([("x-test", "ok")]))), 1)[1]),

    # -- 8.1.1: malformed messages
    ("content-length that the DATA does not match", "8.1.1", ("malformed",),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS, method="POST", extra=[("content-length", "10")]) + frame(DATA, END_STREAM, 1, b"abc")), 1)[1]),
    ("content-length under the DATA length", "8.1.1", ("malformed",),
     lambda c: (c.send(post(c, 1, extra=[("content-length", "1")]) + data(1)), 1)[1]),
    ("content-length under the length of two DATA frames", "8.1.1", ("malformed",),
     lambda c: (c.send(post(c, 1, extra=[("content-length", "1")]) + data(1, end=False) + data(1)), 1)[1]),

    # -- 8.2: fields
    ("an upper-case header name", "8.2", ("malformed",),
     malformed_req(extra=[("X-Upper", "a")])),
    # 8.2.1: "Implementations MUST perform the following minimal validation"
    ("a field name with a space", "8.2.1", ("malformed",),
     malformed_req(extra=[("x y", "a")])),
    ("a field name with a control character", "8.2.1", ("malformed",),
     malformed_req(extra=[("x\x01y", "a")])),
    ("a field name with a non-ASCII octet", "8.2.1", ("malformed",),
     malformed_req(extra=[(b"x\xe9y", b"a")])),
    ("a field name with a colon", "8.2.1", ("malformed",),
     malformed_req(extra=[("x:y", "a")])),
    ("an empty field name", "8.2.1", ("malformed",),
     malformed_req(extra=[("", "a")])),
    ("a field value with NUL", "8.2.1", ("malformed",),
     malformed_req(extra=[("x-a", "a\x00b")])),
    ("a field value with CR", "8.2.1", ("malformed",),
     malformed_req(extra=[("x-a", "a\rb")])),
    ("a field value with LF", "8.2.1", ("malformed",),
     malformed_req(extra=[("x-a", "a\nb")])),
    ("a field value with CRLF and a smuggled header", "8.2.1", ("malformed",),
     malformed_req(extra=[("x-a", "a\r\nx-smuggled: 1")])),
    ("a field value starting with a space", "8.2.1", ("malformed",),
     malformed_req(extra=[("x-a", " a")])),
    ("a field value ending with a tab", "8.2.1", ("malformed",),
     malformed_req(extra=[("x-a", "a\t")])),
    # 8.2.2: connection-specific fields
    ("a connection-specific header", "8.2.2", ("malformed",),
     malformed_req(extra=[("connection", "keep-alive")])),
    ("keep-alive", "8.2.2", ("malformed",),
     malformed_req(extra=[("keep-alive", "timeout=5")])),
    ("proxy-connection", "8.2.2", ("malformed",),
     malformed_req(extra=[("proxy-connection", "keep-alive")])),
    ("transfer-encoding", "8.2.2", ("malformed",),
     malformed_req(method="POST", extra=[("transfer-encoding", "chunked")])),
    ("upgrade", "8.2.2", ("malformed",),
     malformed_req(extra=[("upgrade", "websocket")])),
    ("TE other than trailers", "8.2.2", ("malformed",),
     malformed_req(extra=[("te", "gzip")])),
    ("TE of trailers and deflate", "8.2.2", ("malformed",),
     malformed_req(extra=[("trailers", "test"), ("te", "trailers, deflate")])),
    ("TE of trailers is accepted", "8.2.2", ("ok",),
     malformed_req(extra=[("te", "trailers")])),
    # 8.3: pseudo-header fields
    ("an unknown pseudo-header", "8.3", ("malformed",),
     malformed_req(pseudo=common() + [(":foo", "bar")])),
    ("a response pseudo-header in a request", "8.3", ("malformed",),
     malformed_req(pseudo=common() + [(":status", "200")])),
    ("a pseudo-header in trailers", "8.3", ("malformed",),
     lambda c: (c.send(post(c, 1) + data(1, end=False) + frame(HEADERS, END_STREAM | END_HEADERS, 1, c.enc.encode([(":method", "POST")]))), 1)[1]),
    ("a pseudo-header after a regular header", "8.3", ("malformed",),
     malformed_req(pseudo=[(":method", "GET"), (":scheme", "http"), ("x-a", "b"), (":authority", "x"), (":path", "/")])),
    ("a regular header first", "8.3", ("malformed",),
     malformed_req(pseudo=[("x-test", "ok")] + common())),
    ("a duplicated pseudo-header", "8.3", ("malformed",),
     malformed_req(pseudo=[(":method", "GET"), (":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")])),
    # 8.3.1: request pseudo-header fields
    ("an empty :path", "8.3.1", ("malformed",),
     malformed_req(pseudo=[(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "")])),
    ("no :method", "8.3.1", ("malformed",),
     malformed_req(pseudo=[(":scheme", "http"), (":authority", "x"), (":path", "/")])),
    ("no :scheme", "8.3.1", ("malformed",),
     malformed_req(pseudo=[(":method", "GET"), (":authority", "x"), (":path", "/")])),
    ("no :path", "8.3.1", ("malformed",),
     malformed_req(pseudo=[(":method", "GET"), (":scheme", "http"), (":authority", "x")])),
    ("a duplicated :method", "8.3.1", ("malformed",),
     malformed_req(pseudo=common() + [(":method", "GET")])),
    ("a duplicated :scheme", "8.3.1", ("malformed",),
     malformed_req(pseudo=common() + [(":scheme", "http")])),
    ("a duplicated :path", "8.3.1", ("malformed",),
     malformed_req(pseudo=common() + [(":path", "/")])),
    ("a :path that is not absolute", "8.3.1", ("malformed",),
     malformed_req(pseudo=[(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "foo")])),
    ("an :authority with userinfo", "8.3.1", ("malformed",),
     malformed_req(pseudo=[(":method", "GET"), (":scheme", "http"), (":authority", "user:pw@x"), (":path", "/")])),
    ("an OPTIONS request in asterisk form", "8.3.1", ("ok",),
     malformed_req(pseudo=[(":method", "OPTIONS"), (":scheme", "http"), (":authority", "x"), (":path", "*")])),
    # a SHOULD: "A server SHOULD treat a request as malformed if it contains a Host
    # header field that identifies an entity that differs from ... :authority"
    ("a Host that differs from :authority", "8.3.1", info(("malformed",)),
     malformed_req(extra=[("host", "other.example")])),
    # 8.5: CONNECT: ":scheme and :path MUST be omitted" ... "A CONNECT request that
    # does not conform to these restrictions is malformed"
    ("CONNECT with :scheme and :path", "8.5", ("malformed",),
     malformed_req(pseudo=[(":method", "CONNECT"), (":scheme", "http"), (":authority", "x:443"), (":path", "/")])),
    ("CONNECT without :authority", "8.5", ("malformed",),
     malformed_req(pseudo=[(":method", "CONNECT")])),

    # -- 8.4 (h2spec http2/8.2): server push
    ("PUSH_PROMISE from the client", "8.4", ("conn", PROTOCOL_ERROR),
     lambda c: (c.send(req(c, 1, flags=END_HEADERS) + frame(PUSH_PROMISE, END_HEADERS, 1, (3).to_bytes(4, "big") + c.headers())), 1)[1]),

    # -- RFC 7541 (h2spec hpack/...)
    ("HPACK: an indexed field past the tables (index 126)", "7541/2.3.3", ("conn", COMPRESSION_ERROR),
     appended(b"\xfe")),
    ("HPACK: a table size update at the end of the field block", "7541/4.2", ("conn", COMPRESSION_ERROR),
     appended(b"\x21")),
    ("HPACK: Huffman padding longer than 7 bits", "7541/5.2", ("conn", COMPRESSION_ERROR),
     appended(b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff")),
    ("HPACK: Huffman padding of zeros", "7541/5.2", ("conn", COMPRESSION_ERROR),
     appended(b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90")),
    ("HPACK: Huffman string with EOS", "7541/5.2", ("conn", COMPRESSION_ERROR),
     appended(b"\x00\x85\xf2\xb2\x4a\x87\xff\xff\xff\xfd\x25\x42\x7f")),
    ("HPACK: indexed field of index 0", "7541/6.1", ("conn", COMPRESSION_ERROR),
     appended(b"\x80")),
    ("HPACK: a table size update of SETTINGS_HEADER_TABLE_SIZE + 1", "7541/6.3", ("conn", COMPRESSION_ERROR),
     table_size_over_limit),
    ("HPACK: a table size update of 0", "7541/6.3", ("ok",),
     prepended(b"\x20")),
    ("HPACK: two table size updates (0, then 4096)", "7541/4.2", ("ok",),
     prepended(b"\x20\x3f\xe1\x1f")),
] + [("HPACK: " + n, s, ("ok",), appended(rep)) for n, s, rep in HPACK_OK]


# {case name: why its failure is not a bug}: a behaviour the RFC allows, or a
# case that cannot be judged through a proxy (tests/h2/KNOWN.md). Never a real
# bug: a failing MUST stays failing until the code is fixed.
KNOWN = {
}


def observe(c, sid, expected):
    """What the server did, waiting as the expected kind needs."""
    kind = expected[0]
    if kind == "info":
        return observe(c, sid, expected[1])
    if kind == "server-preface":
        c.wait(lambda: len(c.frames) >= 1, WAIT)
        if not c.frames:
            return ("closed",) if c.closed else ("nothing",)
        t, fl = c.frames[0][0], c.frames[0][1]
        return ("first-frame", t, fl)
    if kind == "server-settings":
        c.wait(c.server_settings_seen, WAIT)
        if not c.server_settings_seen():
            return ("closed",) if c.closed else ("nothing",)
        return ("settings", sorted(c.server_settings.items()))
    if kind == "quiet":
        c.wait(lambda: c.ping_acked() or c.goaway() is not None, WAIT)
        if c.ping_acked():
            c.wait(lambda: False, QUIET)  # (returns early if the connection closes)
        on_stream = sorted(set(f[0] for f in c.seen() if f[2] == sid and f[0] != PRIORITY))
        if on_stream:
            return ("frames on the stream", on_stream, c.rst_code(sid))
        if c.goaway() is not None:
            return ("goaway", c.goaway())
        return ("quiet",) if c.ping_acked() else (("closed",) if c.closed else ("nothing",))
    if kind == "closed":
        c.wait(lambda: False, WAIT)
        return ("closed", c.goaway()) if c.closed else ("open", c.goaway())
    if kind in ("ping-ack", "ping-ack-or-close"):
        c.wait(lambda: c.ping_acked() or c.goaway() is not None, WAIT)
        if c.ping_acked():
            return ("ping-ack",)
        if c.goaway() is not None:
            return ("goaway", c.goaway())
        return ("closed",) if c.closed else ("nothing",)
    if kind == "settings-ack":
        c.wait(lambda: c.acks(c.mark) >= 1 or c.goaway() is not None, WAIT)
        if c.goaway() is not None:
            return ("goaway", c.goaway())
        return ("settings-ack",) if c.acks(c.mark) else (("closed",) if c.closed else ("nothing",))
    if kind == "data":
        c.wait(lambda: any(len(f[3]) or f[1] & END_STREAM for f in c.data_frames(sid)) or c.goaway() is not None
               or c.rst_code(sid) is not None, WAIT)
        sizes = [len(f[3]) for f in c.data_frames(sid)]
        if sizes:
            return ("data", [s for s in sizes if s] or sizes)
        if c.goaway() is not None:
            return ("goaway", c.goaway())
        if c.rst_code(sid) is not None:
            return ("rst", c.rst_code(sid))
        return ("closed",) if c.closed else ("nothing",)
    if kind == "ok-no-content":
        c.wait(lambda: c.status(sid)[1] or c.goaway() is not None or c.rst_code(sid) is not None, WAIT)
        st = c.status(sid)[0]
        if st is not None:
            return ("status", st, sum(len(f[3]) for f in c.data_frames(sid)))
    if kind == "response-fields":
        c.wait(lambda: c.status(sid)[0] is not None or c.goaway() is not None or c.rst_code(sid) is not None, WAIT)
        fields = next((f[4] for f in c.seen() if f[0] == HEADERS and f[2] == sid and f[4] is not None), None)
        if fields is not None:
            return ("fields", c.status(sid)[0], field_problems(fields))
    if kind == "data-total":
        c.wait(lambda: c.status(sid)[1] or c.goaway() is not None or c.rst_code(sid) is not None, WAIT)
        if c.status(sid)[1]:
            return ("data-total", sum(len(f[3]) for f in c.data_frames(sid)))
    if kind == "ok":
        c.wait(lambda: c.status(sid)[0] is not None or c.goaway() is not None or c.rst_code(sid) is not None, WAIT)
    else:
        # an error: a RST_STREAM or GOAWAY, or a final response (and a short
        # grace for a RST_STREAM after it)
        c.wait(lambda: c.goaway() is not None or c.rst_code(sid) is not None or c.status(sid)[1], WAIT)
        if c.goaway() is None and c.rst_code(sid) is None and c.status(sid)[0] is not None:
            c.wait(lambda: c.goaway() is not None or c.rst_code(sid) is not None, 0.3)
    if c.goaway() is not None:
        return ("goaway", c.goaway())
    if c.rst_code(sid) is not None:
        return ("rst", c.rst_code(sid))
    st = c.status(sid)[0]
    if st is not None:
        return ("status", st)
    return ("closed",) if c.closed else ("nothing",)


def field_problems(fields):
    """What in a response's field section breaks RFC 9113 8.2, 8.2.1, 8.2.2, 8.3."""
    bad, regular = [], False
    for name, value in fields:
        if name.startswith(":"):
            if regular:
                bad.append("pseudo-header after a regular field: " + name)
            if name != ":status":
                bad.append("pseudo-header not for responses: " + name)
            continue
        regular = True
        if not name or any(ch <= " " or "A" <= ch <= "Z" or ch >= "\x7f" or ch == ":" for ch in name):
            bad.append("invalid field name: %r" % name)
        if name in CONNECTION_SPECIFIC:
            bad.append("connection-specific field: %s: %s" % (name, value))
        if any(ch in value for ch in "\x00\r\n") or value[:1] in (" ", "\t") or value[-1:] in (" ", "\t"):
            bad.append("invalid field value: %s: %r" % (name, value))
    if sum(1 for n, _ in fields if n == ":status") != 1:
        bad.append("not exactly one :status")
    return bad


def codes(expected):
    return expected[1] if isinstance(expected[1], tuple) else (expected[1],)


def judge(expected, got):
    kind = expected[0]
    if kind == "info":
        return judge(expected[1], got)
    if kind == "ok":
        return got == ("status", "200")
    if kind in ("ping-ack", "settings-ack"):
        return got == (kind,)
    if kind == "ping-ack-or-close":
        return got == ("ping-ack",) or got == ("closed",) or got == ("goaway", NO_ERROR)
    if kind == "server-preface":
        return got[0] == "first-frame" and got[1] == SETTINGS and not got[2] & ACK
    if kind == "server-settings":
        v = dict(got[1]) if got[0] == "settings" else None
        return v is not None and v.get(ENABLE_PUSH, 0) == 0 and 16384 <= v.get(MAX_FRAME_SIZE, 16384) <= 16777215 \
            and v.get(INITIAL_WINDOW_SIZE, 65535) <= 0x7FFFFFFF
    if kind == "quiet":
        return got == ("quiet",)
    if kind == "ok-no-content":
        return got[0] == "status" and got[1] == "200" and len(got) > 2 and got[2] == 0
    if kind == "response-fields":
        return got[0] == "fields" and got[1] == "200" and got[2] == []
    if kind == "closed":
        return got[0] == "closed"
    if kind == "data":
        return got[0] == "data" and got[1][0] == expected[1]
    if kind == "data-total":
        return got == ("data-total", expected[1])
    if kind == "malformed":
        return got in (("rst", PROTOCOL_ERROR), ("goaway", PROTOCOL_ERROR)) or (
            got[0] == "status" and got[1].startswith("4"))
    if kind == "conn":
        return got[0] == "goaway" and got[1] in codes(expected)
    # a stream error, or the same code as a connection error (RFC 9113 5.4.1)
    return got[0] in ("rst", "goaway") and got[1] in codes(expected)


def run(host, port, sni, act):
    c = Conn(host, port, sni, handshake=not getattr(act, "raw", False))
    try:
        sid = act(c)
        return c, sid
    except Exception:
        c.s.close()
        raise


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    sni = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--tls" else None
    only = sys.argv[5:] if sni else sys.argv[3:]  # optional case-name filters
    for name, section, expected, act in CASES:
        if only and not any(o in name for o in only):
            continue
        line = {"case": name, "section": section, "expected": json.loads(json.dumps(expected))}
        c = None
        try:
            c, sid = run(host, port, sni, act)
            got = observe(c, sid, expected)
            ok = judge(expected, got)
        except Skip as e:
            got, ok = ("skipped", str(e)), True
            line["skipped"] = str(e)
        except Exception as e:  # a case that cannot run is a failure, with why
            got, ok = ("error", repr(e)), False
        finally:
            if c is not None:
                c.s.close()
        line["got"] = list(got)
        if expected[0] == "info":
            line["informational"], line["met"], ok = True, ok, True
        if name in KNOWN:
            line["known"], line["met"], ok = KNOWN[name], ok, True
        line["pass"] = ok
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
