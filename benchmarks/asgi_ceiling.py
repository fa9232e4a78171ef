"""The in-process ceiling of ASGI mode: testproject's ASGI application called
in a loop for ``GET /hello/``, no server. What the application itself costs
bounds every server's figure.

Run as a subprocess by asgi.py: ``python asgi_ceiling.py PROJECT_DIR SECONDS``;
prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

WARMUP_REQUESTS = 200
MAX_REQUESTS = 100_000


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello/",
        "raw_path": b"/hello/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def call(app: Any) -> int:
    status = 0
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # never: the client stays
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(), receive, send)
    return status


async def loop(app: Any, seconds: float) -> dict[str, Any]:
    for _ in range(WARMUP_REQUESTS):
        assert await call(app) == 200
    count, started = 0, time.perf_counter()
    while count < MAX_REQUESTS and time.perf_counter() - started < seconds:
        assert await call(app) == 200
        count += 1
    elapsed = time.perf_counter() - started
    return {"requests": count, "seconds": elapsed, "per_second": count / elapsed}


def main(project: str, seconds: float) -> None:
    sys.path.insert(0, project)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    os.environ["TESTPROJECT_ASGI"] = "1"
    from testproject.asgi import application

    print(json.dumps(asyncio.run(loop(application, seconds))))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
