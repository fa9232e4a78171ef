"""Django's ASGI handler, sending a sync ``StreamingHttpResponse`` as it is produced."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponseBase, StreamingHttpResponse

_DONE = object()


async def produced(
    iterator: Iterator[Any], close: Callable[[], None]
) -> AsyncGenerator[Any, None]:
    """Each item of a sync iterator as soon as it is produced.

    Each step runs thread-sensitively, in the request's own thread as the
    view did, so a generator that uses the ORM keeps its connection. Left
    early (the client went away, and Django cancels the response), ``close``
    runs in that thread too, after the step in progress: Django closes a
    response it finished sending, not one it cancelled.
    """

    def step() -> Any:
        return next(iterator, _DONE)

    pull = sync_to_async(step, thread_sensitive=True)
    finished = False
    try:
        while (item := await pull()) is not _DONE:
            yield item
        finished = True
    finally:
        if not finished:
            await sync_to_async(close, thread_sensitive=True)()


class StreamingAsgiHandler(ASGIHandler):
    """What ``get_asgi_application()`` returns, except for sync streams.

    Django's handler consumes a sync iterator whole before it sends the
    first byte (with a warning): an event stream never answers, a large
    download waits in memory. Here it is turned into an async iterator that
    pulls one item at a time, so it goes out as under WSGI.
    """

    async def send_response(self, response: HttpResponseBase, send: Any) -> None:
        if not isinstance(response, StreamingHttpResponse) or response.is_async:
            await super().send_response(response, send)
            return
        content = cast(Iterator[bytes], response.streaming_content)
        stream = produced(content, response.close)
        response.streaming_content = stream
        try:
            await super().send_response(response, send)
        finally:
            # Django's own iteration does not close our iterator when a send
            # fails (the client left): closing it closes the response.
            await stream.aclose()
