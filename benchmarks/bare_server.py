"""A bare reference server for bounds.py: Django's WSGIHandler behind the least
code that can answer wrk, with no HTTP parsing, no checks and no log.

Not a server for anything else: it takes every ``\\r\\n\\r\\n`` as the end of
a GET without a body and answers it with the ``/hello/`` environ of
ceiling.py, whatever was asked. What it measures is the cost of the serving
model itself on this machine: ``threads`` runs one thread per connection
(runserver_plus's model), ``loop`` serves every connection from one thread
with a selector.

Usage: ``python bare_server.py PROJECT_DIR {threads,loop}``. It binds
127.0.0.1 on a free port, prints ``PORT <n>`` and serves until killed.
"""

from __future__ import annotations

import contextlib
import io
import os
import selectors
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

END = b"\r\n\r\n"


def make_answer(project: str) -> Callable[[], bytes]:
    """A function returning one whole HTTP response from Django, as bytes."""
    sys.path.insert(0, project)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    # Imported once sys.path and the settings are set; ceiling.py is beside us.
    import django
    from ceiling import base_environ
    from django.core.handlers.wsgi import WSGIHandler

    django.setup()
    handler = WSGIHandler()
    template = base_environ()

    def answer() -> bytes:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(b"")
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            started.append((status, headers))

        result = handler(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            result.close()
        status, headers = started[0]
        lines = [f"HTTP/1.1 {status}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        if not any(name.lower() == "content-length" for name, _ in headers):
            lines.append(f"Content-Length: {len(body)}\r\n")
        return "".join(lines).encode("latin-1") + b"\r\n" + body

    return answer


def serve_threads(listener: socket.socket, answer: Callable[[], bytes]) -> None:
    def serve(client: socket.socket) -> None:
        buffer = b""
        with client, contextlib.suppress(OSError):  # wrk resets when a run ends
            while data := client.recv(65536):
                buffer += data
                while END in buffer:
                    buffer = buffer.split(END, 1)[1]
                    client.sendall(answer())

    while True:
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(client,), daemon=True).start()


def serve_loop(listener: socket.socket, answer: Callable[[], bytes]) -> None:
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                client, _ = listener.accept()
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(client, selectors.EVENT_READ)
                buffers[client] = b""
                continue
            client = key.fileobj  # type: ignore[assignment]
            try:
                data = client.recv(65536)
                buffer = buffers[client] + data
                while END in buffer:
                    buffer = buffer.split(END, 1)[1]
                    client.sendall(answer())
            except OSError:  # wrk resets its connections when a run ends
                data = b""
            if not data:
                selector.unregister(client)
                del buffers[client]
                client.close()
                continue
            buffers[client] = buffer


def main(project: str, mode: str) -> None:
    answer = make_answer(project)
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    if mode == "threads":
        serve_threads(listener, answer)
    else:
        serve_loop(listener, answer)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("threads", "loop"):
        sys.exit(f"usage: {sys.argv[0]} PROJECT_DIR {{threads,loop}}")
    main(sys.argv[1], sys.argv[2])
