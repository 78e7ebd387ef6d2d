#!/usr/bin/python3
"""A real gRPC server (Debian's python3-grpcio, h2c), raw bytes instead of
protobuf classes:     grpc_server.py PORT NAME STATE_FILE

  /test.Echo/Call      unary: answers NAME + ":" + the request; sets the
                       trailing metadata x-served-by: NAME and x-trailer: yes
  /test.Echo/Stream    server streaming: the request's first byte N gives N
                       messages b"msg-0" .. b"msg-{N-1}", then trailing
                       metadata x-count: N
  /test.Echo/Fail      unary: fails with RESOURCE_EXHAUSTED "quota"
  /grpc.health.v1.Health/Check
                       SERVING (b"\\x08\\x01") unless STATE_FILE contains
                       "NOT_SERVING" (b"\\x08\\x02")

Prints {"listening": PORT} once it serves."""
import json, sys
from concurrent import futures
import grpc

port, name, state_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def call(request, context):
    context.set_trailing_metadata((("x-served-by", name), ("x-trailer", "yes")))
    return name.encode() + b":" + request


def stream(request, context):
    n = request[0] if request else 0
    for i in range(n):
        yield b"msg-%d" % i
    context.set_trailing_metadata((("x-count", str(n)),))


def fail(request, context):
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota")


def check(request, context):
    try:
        with open(state_file) as f:
            state = f.read().strip()
    except OSError:
        state = "SERVING"
    return b"\x08\x02" if state == "NOT_SERVING" else b"\x08\x01"


echo = grpc.method_handlers_generic_handler("test.Echo", {
    "Call": grpc.unary_unary_rpc_method_handler(call),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
})
health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
    "Check": grpc.unary_unary_rpc_method_handler(check),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers((echo, health))
server.add_insecure_port("127.0.0.1:%d" % port)
server.start()
print(json.dumps({"listening": port}), flush=True)
server.wait_for_termination()
