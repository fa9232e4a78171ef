"""Django's ASGI handler as runserver_plus serves it, over real sockets."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import cast

import pytest
from django.core.handlers.asgi import ASGIHandler

from runserver_plus.asgi_handler import stream_sync_iterators
from runserver_plus.server.asgi_scope import ASGIApp, Receive, Scope, Send
from tests import asgi_urls
from tests.live_asgi import serve_asgi

pytestmark = pytest.mark.usefixtures("collect_leaks")

REQUEST = b"GET /paced/ HTTP/1.1\r\nHost: testserver\r\n\r\n"


@pytest.fixture(autouse=True)
def paced_urls(settings) -> Iterator[None]:
    settings.ROOT_URLCONF = "tests.asgi_urls"
    settings.ALLOWED_HOSTS = ["testserver"]
    asgi_urls.GATE.clear()
    asgi_urls.CLOSED.clear()
    yield
    asgi_urls.GATE.set()  # never leave a stream waiting


def project_application() -> ASGIApp:
    """What a Channels project's ``ASGI_APPLICATION`` is: a router around the
    ``ASGIHandler`` that ``get_asgi_application()`` made, built before the
    server installs anything."""
    django_application = cast("ASGIApp", ASGIHandler())

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"no route for {scope['type']}")
        await django_application(scope, receive, send)

    stream_sync_iterators()  # what the serving worker does in ASGI mode
    stream_sync_iterators()  # once is enough: a second call changes nothing
    return router


def test_a_sync_stream_goes_out_as_it_is_produced() -> None:
    with serve_asgi(project_application()) as live, live.connect() as client:
        client.send(REQUEST)
        while b"first\n" not in client.buffer:
            assert client._fill()
        # The generator waits for the gate: the first item came on its own.
        assert b"second" not in client.buffer
        asgi_urls.GATE.set()
        response = client.read_response()
        assert response.body == b"first\nsecond\n"
        assert response.header("Transfer-Encoding") == "chunked"
    assert asgi_urls.CLOSED.is_set()


def test_a_sync_stream_is_closed_soon_after_the_client_leaves() -> None:
    with serve_asgi(project_application()) as live:
        with live.connect() as client:
            client.send(REQUEST)
            while b"first\n" not in client.buffer:
                assert client._fill()
        left = time.monotonic()
        asgi_urls.GATE.set()  # the generator's pending step ends
        assert asgi_urls.CLOSED.wait(5.0)
        assert time.monotonic() - left < 1.0


def test_importing_the_module_changes_no_handler() -> None:
    code = (
        "import runserver_plus.asgi_handler\n"
        "from django.core.handlers.asgi import ASGIHandler\n"
        "print(ASGIHandler.send_response.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == "django.core.handlers.asgi\n"
