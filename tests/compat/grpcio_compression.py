"""A grpcio client (gRPC's C core, as many services' Python clients are) against the server,
asking for gzip, under concurrent load and with watch streams cancelled mid-flight: every
answer must arrive as a protobuf message, never as compressed bytes (the C core decompresses
what the compressed flag and grpc-encoding say). Run by tests/integration/compression.rs.

    python3 grpcio_compression.py ADDRESS TOKEN USER_ID [USER_ID ...]
"""

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

THREADS = 16
CALLS_PER_THREAD = 40
WATCHES = 16


def field(number, payload):
    """A length-delimited protobuf field."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def plain_message(answer):
    """An answer of ours starts with field 1 (length-delimited), never with a gzip header."""
    return len(answer) > 2 and answer[0] == 0x0A and not answer.startswith(b"\x1f\x8b")


def main(address, token, user_ids):
    channel = grpc.insecure_channel(
        address, compression=grpc.Compression.Gzip,
        options=[("grpc.default_compression_algorithm", grpc.Compression.Gzip)],
    )
    raw = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
    get = channel.unary_unary("/userservice.UserService/GetUser", **raw)
    update = channel.unary_unary("/userservice.UserService/UpdateUser", **raw)
    listing = channel.unary_unary("/userservice.UserService/ListUsers", **raw)
    watch = channel.unary_stream("/userservice.UserService/WatchUsers", **raw)
    metadata = [("authorization", f"Bearer {token}")]
    bad, checked = [], [0]
    lock = threading.Lock()

    def record(what, answer):
        with lock:
            checked[0] += 1
            if not plain_message(answer):
                bad.append(f"{what}: {answer[:16].hex()}")

    def caller(index):
        for call in range(CALLS_PER_THREAD):
            user = user_ids[(index + call) % len(user_ids)].encode()
            kind = call % 3
            if kind == 0:
                record("GetUser", get(field(1, user), metadata=metadata, timeout=10))
            elif kind == 1:
                name = f"grpcio {index} {call}".encode()
                record("UpdateUser", update(field(1, user) + field(4, name), metadata=metadata, timeout=10))
            else:
                record("ListUsers", listing(b"\x08\x0a", metadata=metadata, timeout=10))

    def watcher(_):
        stream = watch(b"\x10\x01\x18\x01", metadata=metadata, timeout=30)
        for count, event in enumerate(stream):
            record("WatchUsers", event)
            if count == 4:
                stream.cancel()
                break

    with ThreadPoolExecutor(THREADS + WATCHES) as pool:
        futures = [pool.submit(caller, i) for i in range(THREADS)]
        futures += [pool.submit(watcher, i) for i in range(WATCHES)]
        for future in futures:
            future.result()
    print(f"grpcio: {checked[0]} answers checked, {len(bad)} not plain protobuf")
    for line in bad[:10]:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
