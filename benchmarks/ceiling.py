"""Measure the in-process ceiling: Django's WSGI handler called in a loop, no server.

Run as a subprocess by run.py:
``python ceiling.py PROJECT_DIR SECONDS MAX_REQUESTS``; prints one JSON object.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

WARMUP_REQUESTS = 200
PATH = "/hello/"


def base_environ() -> dict[str, Any]:
    """The environ of ``GET /hello/ HTTP/1.1`` with only a Host header, as wrk sends."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": PATH,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_HOST": "",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def main(project: str, seconds: float, max_requests: int) -> None:
    sys.path.insert(0, project)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

    import django
    from django.core.handlers.wsgi import WSGIHandler

    django.setup()
    handler = WSGIHandler()
    template = base_environ()
    statuses: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        statuses.append(status)

    def one_request() -> int:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(b"")
        body: Iterable[bytes] = handler(environ, start_response)
        size = sum(len(chunk) for chunk in body)
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return size

    for _ in range(WARMUP_REQUESTS):
        one_request()
    statuses.clear()

    count = 0
    size = 0
    start = time.perf_counter()
    deadline = start + seconds
    while count < max_requests and time.perf_counter() < deadline:
        size = one_request()
        count += 1
    elapsed = time.perf_counter() - start

    errors = sum(1 for status in statuses if not status.startswith("200"))
    json.dump(
        {
            "requests": count,
            "seconds": elapsed,
            "requests_per_second": count / elapsed,
            "errors": errors,
            "body_bytes": size,
            "django": django.get_version(),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
