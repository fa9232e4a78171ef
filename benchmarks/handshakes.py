"""New connections per second, each with one request: full TLS handshakes or plain.

wrk cannot measure full handshakes: it resumes the TLS session of a closed
connection on the next one. These clients never resume: every connection
starts from a fresh ClientHello with no session to offer.

Usage (what run.py does): ``python handshakes.py URL SECONDS`` prints the
number of answered requests as one line.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from urllib.parse import urlsplit

TIMEOUT = 10.0  # s, per socket operation
EXTRA_TIME = 30.0  # s, on top of the run before a client is killed


def one_request(
    host: str, port: int, path: str, context: ssl.SSLContext | None
) -> bool:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, port), TIMEOUT) as raw:
        sock: socket.socket = raw
        if context is not None:
            sock = context.wrap_socket(raw, server_hostname=host)
            assert not sock.session_reused
        sock.sendall(request.encode())
        answer = b""
        while data := sock.recv(65536):
            answer += data
        if context is not None:
            sock.close()
    return answer.startswith(b"HTTP/1.1 200 ")


def client(url: str, seconds: float) -> tuple[int, int]:
    """(answered, failed) requests on new connections during ``seconds``."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    context = None
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the server's cost is the same
    answered = failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ok = one_request(parts.hostname, parts.port, parts.path or "/", context)
        except OSError:
            ok = False
        answered += ok
        failed += not ok
    return answered, failed


def measure(url: str, seconds: float, processes: int) -> tuple[float, int]:
    """Connections per second from ``processes`` client processes; failures."""
    clients = [
        subprocess.Popen(
            [sys.executable, __file__, url, str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    answered = failed = 0
    for process in clients:
        out, _ = process.communicate(timeout=seconds + EXTRA_TIME)
        ok, bad = (int(n) for n in out.split())
        answered += ok
        failed += bad
    return answered / seconds, failed


if __name__ == "__main__":
    ok, bad = client(sys.argv[1], float(sys.argv[2]))
    print(ok, bad)
