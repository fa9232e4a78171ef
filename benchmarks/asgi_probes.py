"""What asgi.py measures on one server: first-event latency, WebSocket round
trips, and one `.py` save until the new response, with the failures meanwhile."""

from __future__ import annotations

import http.client
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

REQUEST_TIMEOUT = 5.0  # s
RELOAD_TIMEOUT = 30.0  # s, from the save to the new response
POLL_PAUSE = 0.01  # s, between two requests while waiting for new code


def get(port: int, path: str, timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def first_event_ms(port: int, samples: int) -> list[float]:
    """Milliseconds from sending the request to reading the first server-sent
    event of ``/async/events/``, whose next event is 5 s away."""
    timings = []
    request = b"GET /async/events/?count=1&every=5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(samples):
        with socket.create_connection(("127.0.0.1", port), REQUEST_TIMEOUT) as sock:
            started = time.perf_counter()
            sock.sendall(request)
            data = b""
            while b"event: tick" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed before the first event: {data!r}")
                data += chunk
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def websocket_round_trips_ms(port: int, messages: int) -> list[float]:
    """Milliseconds per echo of a short text message on one WebSocket."""
    url = f"ws://127.0.0.1:{port}/ws/echo/"
    timings = []
    origin: Any = f"http://127.0.0.1:{port}"
    with connect(url, origin=origin, open_timeout=REQUEST_TIMEOUT) as ws:
        for number in range(messages):
            text = f"message {number}"
            started = time.perf_counter()
            ws.send(text)
            echoed = ws.recv(REQUEST_TIMEOUT)
            timings.append((time.perf_counter() - started) * 1000)
            if echoed != text:
                raise RuntimeError(f"echoed {echoed!r} for {text!r}")
    return timings


def save_and_wait(port: int, views: Path, version: int) -> dict[str, Any]:
    """Change /hello/'s text in ``views``, then GET /hello/ until the new text
    comes back; the seconds that took and the requests that failed meanwhile
    (refused, reset, timed out or not 200)."""
    old_text = views.read_text()
    marker = f"Hello, version {version}!"
    new_text = old_text.replace(_current_greeting(old_text), marker, 1)
    failures: list[str] = []
    requests = 0
    views.write_text(new_text)
    saved = time.perf_counter()
    deadline = saved + RELOAD_TIMEOUT
    while time.perf_counter() < deadline:
        requests += 1
        try:
            status, body = get(port, "/hello/")
        except (OSError, http.client.HTTPException) as error:
            failures.append(repr(error))
        else:
            if status != 200:
                failures.append(f"status {status}")
            elif body.decode() == marker + "\n":
                return {
                    "seconds": time.perf_counter() - saved,
                    "requests": requests,
                    "failures": failures,
                }
        time.sleep(POLL_PAUSE)  # the polling rate, not a synchronisation
    raise RuntimeError(f"no new response {RELOAD_TIMEOUT} s after the save")


def _current_greeting(text: str) -> str:
    start = text.index('HttpResponse("Hello, ') + len('HttpResponse("')
    end = text.index("\\n", start)
    return text[start:end]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p99": p99, "count": len(ordered)}
