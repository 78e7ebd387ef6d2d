#!/usr/bin/python3
"""An h2c server (Debian's python3-h2) that answers each request as its path
asks, the odd ways included, to test rampart's HTTP/2 client:
    odd_server.py PORT STATS_FILE

  /ok              200, body "ok"
  /refuse/KEY      RST_STREAM(REFUSED_STREAM) the first time KEY is seen, then 200 "again"
  /refuse-always   RST_STREAM(REFUSED_STREAM), every time
  /reset-before    RST_STREAM(INTERNAL_ERROR), no response head
  /reset-after     200, 5 bytes of body, then RST_STREAM(INTERNAL_ERROR)
  /upper           200 with a field name in capitals (malformed in HTTP/2)
  /continue        100 (interim), then 200 "after-100"
  /big-head        200 with a 40,000-byte field (HEADERS + CONTINUATION)
  /huge-head       200 with a 100,000-byte field (over rampart's 64 KiB limit)
  /padded          200, body "padded-body" in a DATA frame with 100 bytes of padding
  /short           200, content-length 10, 5 bytes of body
  /long            200, content-length 5, 10 bytes of body in one DATA frame
  /close-after     200 and 180,000 bytes of body ("bye" repeated, no length),
                   then the connection closed at once
  /trailers        200, body "t", trailers x-t: 1
  /status-503      503, body "busy"
  /switch          101 (forbidden in HTTP/2)
  /reset-after-end 200, body "whole", trailers ending the stream, then
                   RST_STREAM(CANCEL): the answer is whole all the same
  /never           200 with x-answer-secret sent "never indexed" (RFC 7541
                   6.2.3) and x-answer-plain sent plainly; the body names the
                   request's fields that came "never indexed", comma-separated

STATS_FILE gets {"connections": N, "refused": N, "refused_always": N,
"status_503": N} after every change: the connections that carried a request,
the streams refused on /refuse/KEY, those refused on /refuse-always, and the
503s answered on /status-503."""
import asyncio, json, os, sys
import h2.config, h2.connection, h2.errors, h2.events, hpack
from hyperframe.frame import DataFrame, RstStreamFrame

port, stats_file = int(sys.argv[1]), sys.argv[2]
stats = {"connections": 0, "refused": 0, "refused_always": 0, "status_503": 0}
refused = set()


def save():
    with open(stats_file + ".tmp", "w") as f:
        json.dump(stats, f)
    os.replace(stats_file + ".tmp", stats_file)


class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8",
            validate_outbound_headers=False, normalize_outbound_headers=False))
        self.c.initiate_connection()
        self.t.write(self.c.data_to_send())
        self.paths = {}
        self.never = {}
        self.counted = False

    def data_received(self, data):
        try:
            events = self.c.receive_data(data)
        except Exception as e:
            print("protocol error: %r" % e, file=sys.stderr, flush=True)
            self.t.close()
            return
        for e in events:
            if isinstance(e, h2.events.RequestReceived):
                self.paths[e.stream_id] = dict(e.headers)[":path"]
                self.never[e.stream_id] = [h[0] for h in e.headers
                                           if isinstance(h, hpack.NeverIndexedHeaderTuple)]
                if not self.counted:
                    # (a health check's bare TCP connection is not counted)
                    self.counted = True
                    stats["connections"] += 1
                    save()
            elif isinstance(e, h2.events.DataReceived):
                self.c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                self.answer(e.stream_id, self.paths.pop(e.stream_id, "/"))
        self.t.write(self.c.data_to_send())

    def answer(self, sid, path):
        c = self.c
        ok = lambda extra=(): c.send_headers(sid, [(":status", "200")] + list(extra))
        if path == "/ok":
            ok([("content-length", "2")])
            c.send_data(sid, b"ok", end_stream=True)
        elif path.startswith("/refuse/"):
            if path not in refused:
                refused.add(path)
                stats["refused"] += 1
                save()
                c.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            else:
                ok()
                c.send_data(sid, b"again", end_stream=True)
        elif path == "/refuse-always":
            stats["refused_always"] += 1
            save()
            c.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif path == "/reset-before":
            c.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif path == "/reset-after":
            ok()
            c.send_data(sid, b"12345")
            c.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif path == "/upper":
            ok([("X-Upper", "1")])
            c.send_data(sid, b"upper", end_stream=True)
        elif path == "/continue":
            c.send_headers(sid, [(":status", "100")])
            ok()
            c.send_data(sid, b"after-100", end_stream=True)
        elif path == "/big-head":
            ok([("x-big", "b" * 40000)])
            c.send_data(sid, b"big", end_stream=True)
        elif path == "/huge-head":
            ok([("x-huge", "h" * 100000)])
            c.send_data(sid, b"huge", end_stream=True)
        elif path == "/padded":
            ok()
            c.send_data(sid, b"padded-body", end_stream=True, pad_length=100)
        elif path == "/short":
            ok([("content-length", "10")])
            c.send_data(sid, b"12345", end_stream=True)
        elif path == "/long":
            ok([("content-length", "5")])
            self.t.write(c.data_to_send())
            # (the library keeps to the length it was given: a raw frame)
            self.t.write(DataFrame(sid, b"helloEXTRA", flags=["END_STREAM"]).serialize())
        elif path == "/close-after":
            body = b"bye" * 60000
            ok()  # no length: its end is END_STREAM alone
            for i in range(0, len(body), 16384):
                c.send_data(sid, body[i:i + 16384], end_stream=i + 16384 >= len(body))
            self.t.write(c.data_to_send())
            self.t.close()
        elif path == "/trailers":
            ok()
            c.send_data(sid, b"t")
            c.send_headers(sid, [("x-t", "1")], end_stream=True)
        elif path == "/switch":
            c.send_headers(sid, [(":status", "101")])
        elif path == "/reset-after-end":
            ok()
            c.send_data(sid, b"whole")
            c.send_headers(sid, [("x-t", "1")], end_stream=True)
            self.t.write(c.data_to_send())
            # (the library refuses to reset a closed stream: a raw frame)
            self.t.write(RstStreamFrame(sid, error_code=8).serialize())
        elif path == "/never":
            c.send_headers(sid, [(":status", "200"),
                                 hpack.NeverIndexedHeaderTuple("x-answer-secret", "s"),
                                 ("x-answer-plain", "p")])
            c.send_data(sid, ",".join(self.never.pop(sid, [])).encode(), end_stream=True)
        elif path == "/status-503":
            stats["status_503"] += 1
            save()
            c.send_headers(sid, [(":status", "503")])
            c.send_data(sid, b"busy", end_stream=True)
        else:
            c.send_headers(sid, [(":status", "404")], end_stream=True)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port)
    save()
    print(json.dumps({"listening": port}), flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
