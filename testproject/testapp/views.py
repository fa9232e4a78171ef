"""Plain Django views that the tests and benchmarks request through the server."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from testapp.models import Note

#: Changes every time this module is imported, i.e. on every (re)start of the
#: process serving requests; tests compare it across reloads.
BOOT_ID = uuid.uuid4().hex

MAX_SLEEP = 10.0  # s
GATE_POLL = 0.005  # s, between two looks for a gate's file
MAX_CHUNKS = 1000
DEFAULT_LARGE_SIZE = 1024 * 1024  # bytes
MAX_LARGE_SIZE = 64 * 1024 * 1024  # bytes
MAX_QUERIES = 1000
#: Where the sync event stream notes that its generator was closed early.
SYNC_CLOSED_LOG = "sync-events-closed.log"

#: The CGI/WSGI environ keys /echo/ reports verbatim under "meta".
ECHO_META_KEYS = (
    "REQUEST_METHOD",
    "SERVER_PROTOCOL",
    "PATH_INFO",
    "QUERY_STRING",
    "SCRIPT_NAME",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "REMOTE_ADDR",
    "REMOTE_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "GATEWAY_INTERFACE",
    "SERVER_SOFTWARE",
    "wsgi.url_scheme",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
)


def _float_param(request: HttpRequest, name: str, default: float) -> float:
    try:
        return float(request.GET.get(name, default))
    except ValueError:
        return default


def _int_param(request: HttpRequest, name: str, default: int) -> int:
    try:
        return int(request.GET.get(name, default))
    except ValueError:
        return default


def index(request: HttpRequest) -> HttpResponse:
    """The front page: every view and a few static files, to try by clicking."""
    return render(request, "testapp/index.html")


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, world!\n", content_type="text/plain")


@csrf_exempt
def echo(request: HttpRequest) -> JsonResponse:
    """Describe the request as the application saw it, for any method."""
    meta = request.META
    body = request.body
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "path_info": request.path_info,
            "query_string": meta.get("QUERY_STRING"),
            "scheme": request.scheme,
            "is_secure": request.is_secure(),
            "headers": {k: v for k, v in meta.items() if k.startswith("HTTP_")},
            "content_type": meta.get("CONTENT_TYPE"),
            "content_length": meta.get("CONTENT_LENGTH"),
            "body_length": len(body),
            "body": body.decode("utf-8", errors="replace"),
            "sha256": hashlib.sha256(body).hexdigest(),
            "meta": {k: str(v) for k, v in meta.items() if k in ECHO_META_KEYS},
            "meta_keys": sorted(meta),
        }
    )


def slow(request: HttpRequest) -> HttpResponse:
    seconds = min(max(_float_param(request, "seconds", 1.0), 0.0), MAX_SLEEP)
    # The view's whole purpose is to be slow: it stands for a long request.
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds}\n", content_type="text/plain")


def gate(request: HttpRequest, name: str) -> HttpResponse:
    """Hold the request until the test opens the gate: creates
    ``<name>.entered`` in ``$TESTPROJECT_GATE_DIR``, then waits (at most
    MAX_SLEEP) until ``<name>.open`` exists there. Lets a test choose the
    moment a response is written."""
    directory = os.environ.get("TESTPROJECT_GATE_DIR")
    if not directory:
        raise Http404("no gate directory")
    gate_dir = Path(directory)
    (gate_dir / f"{name}.entered").touch()
    deadline = time.monotonic() + MAX_SLEEP
    pause = threading.Event()
    while not (gate_dir / f"{name}.open").exists():
        if time.monotonic() > deadline:
            return HttpResponse("gate timed out\n", status=504)
        pause.wait(GATE_POLL)
    return HttpResponse(f"gate {name} opened\n", content_type="text/plain")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    chunks = min(max(_int_param(request, "chunks", 5), 1), MAX_CHUNKS)

    def lines() -> Iterator[bytes]:
        for i in range(chunks):
            yield f"chunk {i}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain")


def sync_events(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events from a sync generator: one at once, then ``?count=``
    more every ``?every=`` seconds. When the stream ends early (the client
    left), a line with the stream's id goes to
    ``MEDIA_ROOT/sync-events-closed.log``."""
    count = min(max(_int_param(request, "count", 10), 0), MAX_CHUNKS)
    try:
        every = min(max(float(request.GET.get("every", 1.0)), 0.0), MAX_SLEEP)
    except ValueError:
        every = 1.0
    stream_id = request.GET.get("id", "")

    def stream() -> Iterator[bytes]:
        finished = False
        pause = threading.Event()  # never set: the pace between events
        try:
            for number in range(count + 1):
                yield f"id: {number}\nevent: tick\ndata: {time.time()}\n\n".encode()
                if number < count:
                    pause.wait(every)
            finished = True
        finally:
            if not finished and stream_id:
                note_closed(SYNC_CLOSED_LOG, stream_id)

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


def note_closed(log_name: str, stream_id: str) -> None:
    """Append to ``MEDIA_ROOT/log_name`` that the stream ``stream_id`` was
    closed before its end: the tests read it to see a client's leaving."""
    settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
    with open(settings.MEDIA_ROOT / log_name, "a") as log:
        log.write(f"{stream_id} {time.time()}\n")


def boom(request: HttpRequest) -> HttpResponseBase:
    raise RuntimeError("boom from testapp")


def large_body(size: int) -> bytes:
    """Return ``size`` deterministic bytes: 0, 1, ..., 255 repeated."""
    pattern = bytes(range(256))
    return (pattern * (size // len(pattern) + 1))[:size]


def large(request: HttpRequest) -> HttpResponse:
    size = min(max(_int_param(request, "size", DEFAULT_LARGE_SIZE), 0), MAX_LARGE_SIZE)
    return HttpResponse(large_body(size), content_type="application/octet-stream")


def page(request: HttpRequest) -> HttpResponse:
    return render(request, "testapp/page.html", {"title": "runserver_plus test page"})


def pid(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "pid": os.getpid(),
            "boot_id": BOOT_ID,
            "run_main": os.environ.get("RUN_MAIN"),
        }
    )


@csrf_exempt
@require_POST
def upload(request: HttpRequest) -> JsonResponse:
    body = request.body
    return JsonResponse(
        {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    )


def queries(request: HttpRequest) -> JsonResponse:
    """Look notes up one at a time, ``?n=`` of them (3 by default): with
    ``?n=12``, ``runserver --print-sql`` warns of an N+1 pattern. Each
    ``?db=<alias>`` also runs one query on that database."""
    count = min(max(_int_param(request, "n", 3), 0), MAX_QUERIES)
    found = sum(Note.objects.filter(pk=pk).exists() for pk in range(1, count + 1))
    aliases = [alias for alias in request.GET.getlist("db") if alias in connections]
    for alias in aliases:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT %s", [alias])
    return JsonResponse({"lookups": count, "found": found, "databases": aliases})
