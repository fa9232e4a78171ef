"""Django's ASGI handler, made to send sync streaming responses as produced."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponseBase, StreamingHttpResponse

from runserver_plus import _compat

_DONE = object()
#: Marks our ``send_response``, so that it is installed once.
_INSTALLED = "_runserver_plus_streams_sync_iterators"


async def produced(
    iterator: Iterator[Any], close: Callable[[], None]
) -> AsyncGenerator[Any, None]:
    """Each item of a sync iterator as soon as it is produced.

    Each step runs thread-sensitively, in the request's own thread as the
    view did, so a generator that uses the ORM keeps its connection. Left
    early (the client went away), ``close`` runs in that thread too, after
    the step in progress.
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


def stream_sync_iterators() -> None:
    """Make every ``ASGIHandler`` of this process send a sync
    ``StreamingHttpResponse`` as it is produced; idempotent.

    Django's handler consumes a sync iterator whole before it sends the first
    byte (with a warning): an event stream never answers, a large download
    waits in memory. The handler a project builds (``get_asgi_application()``,
    also inside a Channels ``ProtocolTypeRouter``) is Django's class itself,
    so the class's ``send_response`` is wrapped: the iterator becomes an
    async one that pulls one item at a time, as under WSGI. For the process
    that serves in ASGI mode only; importing this module changes nothing.
    """
    if getattr(ASGIHandler.send_response, _INSTALLED, False):
        return
    original = ASGIHandler.send_response

    async def send_response(
        self: ASGIHandler, response: HttpResponseBase, send: Any
    ) -> None:
        if not isinstance(response, StreamingHttpResponse) or response.is_async:
            await original(self, response, send)
            return
        close = _compat.left_stream_closer(response)
        content = cast(Iterator[bytes], response.streaming_content)
        stream = produced(content, close)
        response.streaming_content = stream
        try:
            await original(self, response, send)
        finally:
            # Django's own iteration does not close our iterator when a send
            # fails (the client left): closing it closes the sync one.
            await stream.aclose()

    setattr(send_response, _INSTALLED, True)
    ASGIHandler.send_response = send_response  # type: ignore[method-assign]
