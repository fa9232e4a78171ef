"""Async views, for ASGI mode: one that awaits, one that streams server-sent events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from testapp.views import note_closed

MAX_SLEEP = 10.0  # s
MAX_EVENTS = 1000
#: Where the event stream notes that its generator was closed or cancelled.
CLOSED_LOG = "events-closed.log"


def _float_param(request: HttpRequest, name: str, default: float) -> float:
    try:
        return float(request.GET.get(name, default))
    except ValueError:
        return default


async def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, async world!\n", content_type="text/plain")


async def sleep(request: HttpRequest) -> HttpResponse:
    """Await for ``?seconds=`` without holding a thread."""
    seconds = min(max(_float_param(request, "seconds", 1.0), 0.0), MAX_SLEEP)
    await asyncio.sleep(seconds)
    return HttpResponse(f"slept {seconds}\n", content_type="text/plain")


async def events(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events: one at once, then ``?count=`` more every ``?every=``
    seconds. When the stream ends early (the client left), a line with the
    stream's id goes to ``MEDIA_ROOT/events-closed.log``."""
    count = int(min(max(_float_param(request, "count", 10), 0), MAX_EVENTS))
    every = min(max(_float_param(request, "every", 1.0), 0.0), MAX_SLEEP)
    stream_id = request.GET.get("id", "")

    async def stream() -> AsyncIterator[str]:
        finished = False
        try:
            for number in range(count + 1):
                data = json.dumps({"n": number, "t": time.time()})
                yield f"id: {number}\nevent: tick\ndata: {data}\n\n"
                if number < count:
                    await asyncio.sleep(every)
            finished = True
        finally:
            if not finished and stream_id:
                note_closed(CLOSED_LOG, stream_id)

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response
