#!/usr/bin/python3
"""One unary gRPC call with Debian's python3-grpcio (raw bytes, no protobuf):
prints the outcome as JSON.   grpc_call.py HOST:PORT /pkg.Service/Method"""
import json, sys
import grpc

with grpc.insecure_channel(sys.argv[1]) as ch:
    call = ch.unary_unary(sys.argv[2])
    try:
        reply = call(b"\x08\x01", timeout=10)
        print(json.dumps({"code": "OK", "reply": reply.hex()}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details()}))
