#!/usr/bin/python3
"""A real gRPC server (Debian's python3-grpcio, h2c), raw bytes instead of
protobuf classes:     grpc_server.py PORT NAME STATE_FILE

  /test.Echo/Call      unary: answers NAME + ":" + the request; sets the
                       trailing metadata x-served-by: NAME and x-trailer: yes
  /test.Echo/Stream    server streaming: the request's first byte N gives N
                       messages b"msg-0" .. b"msg-{N-1}", then trailing
                       metadata x-count: N
  /test.Echo/Fail      unary: fails with RESOURCE_EXHAUSTED "quota"
  /test.Echo/Sleep     unary: the request is a number of milliseconds, in
                       ASCII; sleeps that long, then answers "left=MS" with
                       the time left to the call's deadline as the server
                       reads it (grpc-timeout), or "left=none"
  /grpc.health.v1.Health/Check
                       SERVING (b"\\x08\\x01") unless STATE_FILE contains
                       "NOT_SERVING" (b"\\x08\\x02")

Prints {"listening": PORT} once it serves."""
import json, sys, time
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


def sleep(request, context):
    time.sleep(int(request.decode()) / 1000)
    left = context.time_remaining()
    return b"left=none" if left is None else b"left=%d" % int(left * 1000)


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
    "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
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
