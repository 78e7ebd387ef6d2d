#!/usr/bin/python3
"""gRPC calls with Debian's python3-grpcio (raw bytes, no protobuf); prints each
outcome as one JSON line (with "ms": how long the call took).

  grpc_call.py HOST:PORT METHOD [--tls CA NAME] [--stream] [--count N] [--body HEX]
                                [--timeout SECONDS]

--tls: h2 over TLS, the certificate verified against CA for NAME.
--stream: a server-streaming call (the request is --body, default 05).
--count: N calls, one line each, on one channel.
--timeout: each call's deadline (grpc-timeout), 10 s by default."""
import argparse, json, time
import grpc

ap = argparse.ArgumentParser()
ap.add_argument("target")
ap.add_argument("method")
ap.add_argument("--tls", nargs=2, metavar=("CA", "NAME"))
ap.add_argument("--stream", action="store_true")
ap.add_argument("--count", type=int, default=1)
ap.add_argument("--body", default=None)
ap.add_argument("--timeout", type=float, default=10)
a = ap.parse_args()

if a.tls:
    with open(a.tls[0], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    ch = grpc.secure_channel(a.target, creds,
                             options=(("grpc.ssl_target_name_override", a.tls[1]),))
else:
    ch = grpc.insecure_channel(a.target)

with ch:
    for _ in range(a.count):
        t0 = time.monotonic()
        try:
            if a.stream:
                body = bytes.fromhex(a.body or "05")
                it = ch.unary_stream(a.method)(body, timeout=a.timeout)
                msgs = [m.decode() for m in it]
                out = {"code": "OK", "messages": msgs,
                       "trailers": dict(it.trailing_metadata() or ())}
            else:
                body = bytes.fromhex(a.body or "0801")
                reply, call = ch.unary_unary(a.method).with_call(body, timeout=a.timeout)
                out = {"code": "OK", "reply": reply.decode(errors="replace"),
                       "trailers": dict(call.trailing_metadata() or ())}
        except grpc.RpcError as e:
            out = {"code": e.code().name, "details": e.details()}
        out["ms"] = int((time.monotonic() - t0) * 1000)
        print(json.dumps(out), flush=True)
