"""Is a Kafka broker ready? One real Metadata request over a plain socket, standard library only.

Owns the readiness probe the embedded stack waits on (``kafka_broker.py``) and the compose Kafka
image's healthcheck runs: ``python3 kafka_probe.py [HOST:PORT]`` (default ``127.0.0.1:9092``) exits
0 when the broker lists at least one live broker, 1 otherwise.  It imports nothing outside the
standard library, so the image copies this one file.
"""

from __future__ import annotations

import socket
import struct
import sys


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("Kafka closed the connection mid-response")
        chunks += chunk
    return bytes(chunks)


def probe_kafka(host: str, port: int, timeout_s: float = 2.0) -> int:
    """Send a real Metadata (v7) request; return how many live brokers the cluster reports.

    Raises when the port does not answer, does not speak Kafka, or lists no broker yet (in
    KRaft a broker appears in metadata only once it is registered and unfenced).
    """
    correlation_id, client_id = 0x15E, b"ise-ready-probe"
    header = struct.pack(">hhih", 3, 7, correlation_id, len(client_id)) + client_id  # Metadata v7
    request = header + struct.pack(">ib", -1, 0)  # all topics (null array), no auto-creation
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        response = _recv_exact(sock, size)
    got_id, _throttle_ms, brokers = struct.unpack_from(">iii", response)
    if got_id != correlation_id:
        raise ConnectionError(f"not a Kafka reply (correlation id {got_id})")
    if brokers < 1:
        raise ConnectionError("Kafka answered but no broker is registered yet")
    return brokers


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or args[:1] in (["-h"], ["--help"]):
        print("usage: kafka_probe.py [HOST:PORT]   exit 0 when a Kafka broker there is ready", file=sys.stderr)
        return 2
    host, _, port = (args[0] if args else "127.0.0.1:9092").rpartition(":")
    if not port.isdigit():
        print(f"kafka_probe.py: {args[0]!r} is not HOST:PORT", file=sys.stderr)
        return 2
    host = host or "127.0.0.1"
    try:
        print(f"Kafka at {host}:{port} ready ({probe_kafka(host, int(port))} broker(s))")
    except (OSError, struct.error) as exc:
        print(f"Kafka at {host}:{port} not ready: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
