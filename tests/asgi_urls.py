"""A URLconf for the ASGI handler tests: a sync stream the test paces."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path

#: Opened by the test to let the stream's second item out.
GATE = threading.Event()
#: Set when the stream's generator is closed.
CLOSED = threading.Event()
WAIT = 10.0  # s, the longest the stream waits for the gate


def paced(request: HttpRequest) -> StreamingHttpResponse:
    def items() -> Iterator[bytes]:
        try:
            yield b"first\n"
            GATE.wait(WAIT)
            yield b"second\n"
        finally:
            CLOSED.set()

    return StreamingHttpResponse(items(), content_type="text/plain")


urlpatterns = [path("paced/", paced)]
