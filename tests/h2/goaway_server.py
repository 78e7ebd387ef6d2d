#!/usr/bin/python3
"""An h2c server (Debian's python3-h2) that leaves every connection with a
GOAWAY under load:     goaway_server.py PORT EVERY STATS_FILE

On each connection, when the EVERY-th request arrives, the server sends
GOAWAY(NO_ERROR, last_stream_id = that request's stream). Streams up to it are
answered (a request still in flight finishes); streams above it, which a busy
client has already sent, are never processed: RFC 9113 6.8 lets the client send
them again on another connection. Once the answered ones are done, the
connection is closed. Every answer is 200 with the body "METHOD PATH LEN", LEN
the request body's length.

EVERY = 0: a server that takes no stream at all, GOAWAY(last_stream_id = 0)
with its SETTINGS on every connection (a server draining while its listener
still accepts). EVERY = "none": SETTINGS_MAX_CONCURRENT_STREAMS = 0 instead.

STATS_FILE gets {"connections", "goaways", "answered", "unprocessed"} after
every change. Prints {"listening": PORT} once it serves."""
import asyncio, json, sys
import h2.config, h2.connection, h2.events, h2.settings
from hyperframe.frame import GoAwayFrame

port, every, stats_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
no_streams = every == "none"
every = 0 if no_streams else int(every)
stats = {"connections": 0, "goaways": 0, "answered": 0, "unprocessed": 0}


def save():
    with open(stats_file + ".tmp", "w") as f:
        json.dump(stats, f)
    import os
    os.replace(stats_file + ".tmp", stats_file)


class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.c = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        if no_streams:
            self.c.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0})
        self.c.initiate_connection()
        self.t.write(self.c.data_to_send())
        self.requests = 0
        self.eof_sent = False
        self.last = None      # GOAWAY's last stream id, once sent
        self.pending = {}     # stream id -> [method, path, body length]
        self.open = set()     # streams at most `last` not yet answered
        stats["connections"] += 1
        if every == 0 and not no_streams:
            self.last = 0
            self.t.write(GoAwayFrame(0, last_stream_id=0).serialize())
            stats["goaways"] += 1
        save()

    def data_received(self, data):
        if self.eof_sent:
            # lingering: what the client still sends is read and dropped
            return
        try:
            events = self.c.receive_data(data)
        except Exception as e:
            print("protocol error: %r" % e, file=sys.stderr, flush=True)
            stats["errors"] = stats.get("errors", 0) + 1
            save()
            self.t.close()
            return
        for e in events:
            if isinstance(e, h2.events.RequestReceived):
                h = dict(e.headers)
                if self.last is not None and e.stream_id > self.last:
                    stats["unprocessed"] += 1
                    continue
                self.pending[e.stream_id] = [h[":method"], h[":path"], 0]
                self.requests += 1
                if self.requests == every:
                    self.t.write(self.c.data_to_send())
                    self.last = e.stream_id
                    self.t.write(GoAwayFrame(0, last_stream_id=e.stream_id).serialize())
                    self.open = set(self.pending)
                    stats["goaways"] += 1
            elif isinstance(e, h2.events.DataReceived):
                self.c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                if e.stream_id in self.pending:
                    self.pending[e.stream_id][2] += len(e.data)
            elif isinstance(e, h2.events.StreamEnded):
                p = self.pending.pop(e.stream_id, None)
                if p is not None:
                    body = ("%s %s %d" % tuple(p)).encode()
                    self.c.send_headers(e.stream_id, [(":status", "200"),
                                                      ("content-length", str(len(body)))])
                    self.c.send_data(e.stream_id, body, end_stream=True)
                    stats["answered"] += 1
                    self.open.discard(e.stream_id)
        self.t.write(self.c.data_to_send())
        save()
        if self.last is not None and not self.open and not self.t.is_closing():
            # a lingering close, as a careful server does: its side is shut,
            # and frames the client sent meanwhile are read and dropped rather
            # than answered with a TCP reset (which could destroy the GOAWAY
            # before the client reads it)
            if self.t.can_write_eof():
                self.t.write_eof()
                self.eof_sent = True
            self.last = -1 if self.last is None else self.last
            asyncio.get_running_loop().call_later(2.0, self.t.close)
            self.open = {None}


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port)
    save()
    print(json.dumps({"listening": port}), flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
