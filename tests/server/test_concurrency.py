"""Threads, stalled and vanishing clients, --nothreading, thread limit, drain."""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Collection, Iterable, Iterator

import pytest

from runserver_plus.server.wsgi import WSGIEnviron
from tests.helpers import wait_until
from tests.live import (
    Gate,
    LogRecorder,
    RawClient,
    record_server_log,
    serve_app,
)

CHUNK = b"x" * 65536
MAX_CHUNKS = 1024  # 64 MiB: far more than socket buffers hold, and still bounded

# A leaked file or socket raises its ResourceWarning in the test that leaked it.
pytestmark = pytest.mark.usefixtures("collect_leaks")


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: testserver", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def gated_app(gate: Gate):
    """``/slow`` waits at the gate; anything else answers its path at once."""

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path.startswith("/slow"):
            gate.wait_here(path)
        body = path.encode("latin-1")
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app


def connect_many(stack: contextlib.ExitStack, port: int, count: int) -> list[RawClient]:
    return [
        stack.enter_context(
            RawClient(socket.create_connection(("127.0.0.1", port), 10))
        )
        for _ in range(count)
    ]


# --- threads ----------------------------------------------------------------------


def test_requests_on_two_connections_run_at_the_same_time() -> None:
    gate = Gate()
    with (
        serve_app(gated_app(gate)) as live,
        gate,
        live.connect() as a,
        live.connect() as b,
    ):
        a.send(get("/slow/a"))
        b.send(get("/slow/b"))
        assert sorted(gate.wait_entered(2, timeout=5)) == ["/slow/a", "/slow/b"]
        gate.open()
        assert a.read_response().body == b"/slow/a"
        assert b.read_response().body == b"/slow/b"


def test_client_leaving_mid_response_does_not_disturb_another(
    log: LogRecorder,
) -> None:
    stream_closed = threading.Event()
    chunks_sent: list[int] = []

    def app(environ: WSGIEnviron, start_response) -> Iterator[bytes]:
        if environ["PATH_INFO"] == "/small":
            start_response("200 OK", [("Content-Length", "5")])
            yield b"small"
            return
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        try:
            for i in range(MAX_CHUNKS):
                chunks_sent.append(i)
                yield CHUNK
        finally:
            stream_closed.set()

    with serve_app(app) as live, live.connect() as other:
        with live.connect() as leaving:
            leaving.send(get("/stream"))
            received = 0
            while received < 200_000:
                received += len(leaving.sock.recv(65536))
            # the stream is now stuck on a full socket buffer, mid-response
            assert other.request("GET", "/small").body == b"small"
        # the client is gone, with unread bytes: the server's next send fails
        assert stream_closed.wait(10), "the streaming response was never closed"
        assert len(chunks_sent) < MAX_CHUNKS
        assert other.request("GET", "/small").body == b"small"
    assert not [r for r in log.records if r.levelno >= logging.WARNING]
    assert not [m for m in log.messages() if "/stream" in m]


def test_many_stalled_clients_do_not_block_a_threaded_server() -> None:
    with serve_app(gated_app(Gate())) as live, contextlib.ExitStack() as stack:
        stalled = connect_many(stack, live.port, 20)
        for client in stalled:
            client.send(b"GET /never-finished HTTP/1.1\r\nHost: x\r\n")
        with live.connect() as client:
            assert client.request("GET", "/fine").body == b"/fine"
        for client in stalled:
            assert client.buffer == b""
            client.close()  # before the drain, which would wait for them


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(
    tmp_path,
) -> None:
    # A body far larger than the socket buffers, as bytes and as a file the
    # server sends with sendfile(): each write is bounded, so the thread is
    # freed and the server stops in time.
    big = tmp_path / "big.bin"
    big.write_bytes(CHUNK * 256)  # 16 MiB

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if environ["PATH_INFO"] == "/file":
            body: Iterable[bytes] = environ["wsgi.file_wrapper"](big.open("rb"))
            return body
        return iter([CHUNK] * 256)

    with (
        record_server_log() as log,
        serve_app(app, read_timeout=0.3) as live,
    ):
        for path in ("/bytes", "/file"):
            with live.connect() as client:
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.send(get(path))
                log.wait_message("Broken pipe from", timeout=10)
                log.records.clear()
            with live.connect() as other:
                assert other.request("GET", "/bytes").status == 200


def test_stalled_request_is_dropped_after_the_read_timeout() -> None:
    with (
        serve_app(gated_app(Gate()), read_timeout=0.3) as live,
        live.connect() as client,
    ):
        client.send(b"GET /half HTTP/1.1\r\nHost: x\r\n")
        response = client.read_response()
        assert response.status == 408
        assert client.is_closed(timeout=5)


def test_stalled_request_body_is_dropped_after_the_read_timeout() -> None:
    bodies: list[object] = []

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        try:
            bodies.append(environ["wsgi.input"].read())
        except Exception as error:
            bodies.append(error)
            raise
        start_response("200 OK", [("Content-Length", "0")])
        return []

    with serve_app(app, read_timeout=0.3) as live, live.connect() as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        # The app's answer goes out, then the connection ends: it is out of sync.
        assert client.read_response().status == 200
        assert client.is_closed(timeout=5)
    # A short read, as Django's server gives: never a body the client did not send.
    assert bodies == [b"abc"]


def test_client_leaving_mid_body_costs_no_error_log(log: LogRecorder) -> None:
    outcome: queue.Queue[object] = queue.Queue()

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        try:
            outcome.put(environ["wsgi.input"].read())
        except Exception as error:
            outcome.put(error)
            raise
        start_response("200 OK", [("Content-Length", "0")])
        return []

    with serve_app(app) as live:
        with live.connect() as client:
            client.send(
                b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
            )
        assert outcome.get(timeout=5) == b"abc"  # a short read, as Django's server
        with live.connect() as client:
            assert client.request("POST", "/up", body=b"0123456789").status == 200
        log.wait_message('"POST /up HTTP/1.1" 200 ')
    errors = [r.getMessage() for r in log.records if r.levelno >= logging.ERROR]
    assert errors == []


# --- --nothreading ---------------------------------------------------------------


def test_nothreading_drops_a_half_sent_request_after_the_read_timeout() -> None:
    with (
        serve_app(gated_app(Gate()), use_threading=False, read_timeout=0.5) as live,
        live.connect() as stalled,
        live.connect() as other,
    ):
        stalled.send(b"GET /half HTTP/1.1\r\nHost: x\r\n")
        other.send(get("/other"))
        response = other.read_response()  # within the client's 10 s timeout
        assert response.body == b"/other"
        assert stalled.read_until_closed().startswith(b"HTTP/1.1 408 ")


def test_nothreading_idle_connection_does_not_block_others() -> None:
    with (
        serve_app(gated_app(Gate()), use_threading=False) as live,
        live.connect() as idle,
        live.connect() as other,
    ):
        assert other.request("GET", "/other").body == b"/other"
        with live.connect() as third:
            assert third.request("GET", "/third").body == b"/third"
        assert idle.buffer == b""


def test_nothreading_idle_connection_is_closed_after_the_idle_timeout() -> None:
    app = gated_app(Gate())
    with (
        serve_app(app, use_threading=False, idle_timeout=0.3) as live,
        live.connect() as idle,
    ):
        assert idle.is_closed(timeout=5)
        with live.connect() as other:
            assert other.request("GET", "/other").status == 200


def test_nothreading_max_connections_makes_further_connections_wait() -> None:
    app = gated_app(Gate())
    with (
        serve_app(app, use_threading=False, max_connections=1, idle_timeout=60) as live,
        live.connect() as first,
        live.connect() as second,
    ):
        second.send(get("/second"))
        assert not second.is_closed(timeout=0.3)
        assert second.buffer == b""  # in the backlog: not accepted yet
        assert first.request("GET", "/first").body == b"/first"
        # accepted, and served, once the first connection has closed
        assert second.read_response().body == b"/second"


def test_nothreading_every_response_closes_the_connection() -> None:
    with serve_app(gated_app(Gate()), use_threading=False) as live:
        for path in ("/a", "/b"):
            with live.connect() as client:
                response = client.request("GET", path)
                assert response.body == path.encode()
                assert response.header("Connection") == "close"
                assert client.is_closed(timeout=5)
        with live.connect() as client:
            client.send(get("/one") + get("/two"))
            assert client.read_response().header("Connection") == "close"
            assert client.read_until_closed() == b""


def test_nothreading_serves_one_request_at_a_time() -> None:
    gate = Gate()
    with (
        serve_app(gated_app(gate), use_threading=False) as live,
        gate,
        live.connect() as slow,
        live.connect() as waiting,
    ):
        slow.send(get("/slow"))
        gate.wait_entered(1, timeout=5)
        waiting.send(get("/next"))
        assert not waiting.is_closed(timeout=0.3)
        assert waiting.buffer == b""  # not answered while /slow runs
        gate.open()
        assert slow.read_response().body == b"/slow"
        assert waiting.read_response().body == b"/next"


# --- the thread limit -------------------------------------------------------------


def test_max_threads_makes_further_connections_wait() -> None:
    gate = Gate()
    with (
        serve_app(gated_app(gate), max_threads=2) as live,
        gate,
        live.connect() as a,
        live.connect() as b,
        live.connect() as c,
    ):
        a.send(get("/slow/a", "Connection: close"))
        b.send(get("/slow/b", "Connection: close"))
        gate.wait_entered(2, timeout=5)
        c.send(get("/fast"))
        assert not c.is_closed(timeout=0.3)
        assert c.buffer == b""  # no thread free: not answered yet
        gate.open()
        assert a.read_response().status == 200
        assert b.read_response().status == 200
        assert c.read_response().body == b"/fast"


def test_idle_keep_alive_connections_hold_no_thread() -> None:
    app = gated_app(Gate())
    with (
        serve_app(app, max_threads=1, idle_timeout=60) as live,
        live.connect() as first,
        live.connect() as second,
    ):
        assert first.request("GET", "/first").status == 200
        # the first connection stays open and idle; the one thread serves on
        assert second.request("GET", "/second").body == b"/second"
        assert first.request("GET", "/again").body == b"/again"


def test_max_connections_makes_further_connections_wait() -> None:
    app = gated_app(Gate())
    with (
        serve_app(app, max_connections=1, idle_timeout=60) as live,
        live.connect() as first,
        live.connect() as second,
    ):
        assert first.request("GET", "/first").status == 200
        second.send(get("/second"))
        assert not second.is_closed(timeout=0.3)
        assert second.buffer == b""  # in the backlog: not accepted yet
        first.close()
        # accepted, and served, once the first connection has closed
        assert second.read_response().body == b"/second"


def test_a_failure_while_serving_closes_that_connection_only(
    capfd: pytest.CaptureFixture[str],
) -> None:
    def failing_filter(record: logging.LogRecord) -> bool:
        if "/boom" in record.getMessage():
            raise RuntimeError("the filter failed")
        return True

    logger = logging.getLogger("django.server")
    logger.addFilter(failing_filter)
    try:
        with (
            serve_app(gated_app(Gate())) as live,
            live.connect() as failing,
            live.connect() as other,
        ):
            assert failing.request("GET", "/boom").body == b"/boom"
            assert failing.is_closed(timeout=5)
            assert other.request("GET", "/fine").body == b"/fine"
    finally:
        logger.removeFilter(failing_filter)
    err = capfd.readouterr().err
    assert "Exception while serving" in err
    assert "RuntimeError: the filter failed" in err


# --- the event loop: long requests get a thread of their own ------------------------


def connection_threads(
    earlier: Collection[threading.Thread] = (),
) -> list[threading.Thread]:
    """Serving threads alive now, but for ``earlier`` ones (a previous test's
    server may still be ending its own)."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("runserver_plus-connection-")
        and thread not in earlier
    ]


def test_a_slow_request_does_not_hold_the_others_up() -> None:
    gate = Gate()
    with (
        serve_app(gated_app(gate)) as live,
        gate,
        live.connect() as slow,
        live.connect() as other,
    ):
        slow.send(get("/slow"))
        gate.wait_entered(1, timeout=5)
        for number in range(3):
            assert other.request("GET", f"/fast/{number}").status == 200
        assert slow.buffer == b""  # still waiting at the gate
        gate.open()
        assert slow.read_response().body == b"/slow"


def test_after_a_slow_request_its_connection_serves_on() -> None:
    gate = Gate()
    with serve_app(gated_app(gate)) as live, gate, live.connect() as client:
        # pipelined: the second request waits in the buffer behind the slow one
        client.send(get("/slow") + get("/next"))
        gate.wait_entered(1, timeout=5)
        gate.open()
        assert client.read_response().body == b"/slow"
        assert client.read_response().body == b"/next"
        # back in the loop: kept alive and answered again
        assert client.request("GET", "/third").body == b"/third"


def test_a_bad_request_behind_a_slow_one_closes_the_connection() -> None:
    gate = Gate()
    earlier = connection_threads()
    with serve_app(gated_app(gate)) as live, gate, live.connect() as client:
        client.send(get("/slow") + b"GET / HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n")
        gate.wait_entered(1, timeout=5)
        # the slow request has its own thread: that thread answers the next one
        wait_until(lambda: len(connection_threads(earlier)) == 2, 5, "the hand-over")
        gate.open()
        assert client.read_response().body == b"/slow"
        assert client.read_response().status == 400
        assert client.is_closed(timeout=5)


def test_the_thread_of_a_slow_request_ends_with_it() -> None:
    gate = Gate()
    earlier = connection_threads()
    with serve_app(gated_app(gate)) as live, gate, live.connect() as client:
        assert client.request("GET", "/warm").status == 200
        assert len(connection_threads(earlier)) == 1  # the loop's
        client.send(get("/slow"))
        gate.wait_entered(1, timeout=5)
        # the request keeps its thread; another one carries the loop on
        wait_until(lambda: len(connection_threads(earlier)) == 2, 5, "the hand-over")
        gate.open()
        assert client.read_response().body == b"/slow"
        wait_until(lambda: len(connection_threads(earlier)) == 1, 5, "the thread's end")
        assert client.request("GET", "/after").body == b"/after"


# --- shutdown and drain -----------------------------------------------------------


def start_drain(live, timeout: float) -> tuple[threading.Thread, queue.Queue[bool]]:
    result: queue.Queue[bool] = queue.Queue()
    thread = threading.Thread(target=lambda: result.put(live.server.drain(timeout)))
    thread.start()
    return thread, result


@pytest.mark.usefixtures("server_mode")  # both drivers drain alike
def test_drain_lets_an_in_flight_request_finish() -> None:
    gate = Gate()
    with (
        serve_app(gated_app(gate), idle_timeout=60) as live,
        gate,
        live.connect() as busy,
        live.connect() as idle,
    ):
        assert idle.request("GET", "/idle").status == 200
        busy.send(get("/slow"))
        gate.wait_entered(1, timeout=5)
        live.server.shutdown()
        live.thread.join(5)
        assert not live.thread.is_alive(), "the accept loop did not stop"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", live.port), 5).close()
        drainer, result = start_drain(live, 5)
        try:
            # the drain has begun once it closed the idle connection
            assert idle.is_closed(timeout=5)
            gate.open()
            response = busy.read_response()
            assert response.status == 200
            assert response.body == b"/slow"
            # not kept alive (announced with Connection: close when the drain
            # reached this connection before the response began)
            assert busy.is_closed(timeout=5)
            assert result.get(timeout=10) is True
        finally:
            drainer.join(10)


@pytest.mark.usefixtures("server_mode")  # both drivers drain alike
def test_drain_keeps_idle_connections_until_its_deadline() -> None:
    with (
        serve_app(gated_app(Gate()), idle_timeout=60, drain_timeout=1.0) as live,
        live.connect() as used,
        live.connect() as fresh,
    ):
        assert used.request("GET", "/").status == 200
        live.server.shutdown()
        stopped = time.monotonic()
        live.thread.join(5)
        drainer, result = start_drain(live, 1.0)
        try:
            # The client of a kept-alive connection cannot know of the stop:
            # its next request is answered, and the connection then closes.
            response = used.request("GET", "/after-the-stop")
            assert response.body == b"/after-the-stop"
            assert response.header("Connection") == "close"
            assert used.is_closed(timeout=5)
            # One that stays idle is closed at the deadline, not before.
            assert fresh.is_closed(timeout=5)
            assert time.monotonic() - stopped >= 1.0
            assert result.get(timeout=10) is True
        finally:
            drainer.join(10)


def wake_pending(sock: socket.socket) -> bool:
    """Whether the server has a wake-up it has not read yet."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def test_nothreading_drain_answers_a_connection_that_speaks_after_the_stop() -> None:
    with (
        serve_app(gated_app(Gate()), use_threading=False, drain_timeout=5) as live,
        live.connect() as waiting,
        live.connect() as other,
    ):
        # Connections are accepted in order: once the later one is answered,
        # the earlier one is in the waiting room.
        assert other.request("GET", "/other").status == 200
        live.server.shutdown()
        wait_until(
            lambda: not wake_pending(live.server.state.wake_socket),
            5,
            "the serial loop never took the stop",
        )

        response = waiting.request("GET", "/late")

        assert response.body == b"/late"
        assert response.header("Connection") == "close"
        assert waiting.is_closed(timeout=5)
        live.thread.join(5)
        assert not live.thread.is_alive(), "the serial loop did not end"


@pytest.mark.usefixtures("server_mode")  # both drivers drain alike
def test_a_request_half_sent_at_the_stop_is_still_answered() -> None:
    with (
        serve_app(gated_app(Gate()), idle_timeout=60) as live,
        live.connect() as client,
    ):
        assert client.request("GET", "/first").status == 200
        # Whether the loop reads these bytes before the stop or not, the
        # connection is not idle: they are on its socket.
        client.send(b"GET /second HTTP/1.1\r\n")
        live.server.shutdown()
        live.thread.join(5)
        assert not live.thread.is_alive()
        drainer, result = start_drain(live, 5)
        try:
            client.send(b"Host: x\r\n\r\n")
            response = client.read_response()
            assert response.body == b"/second"
            assert response.header("Connection") == "close"
            assert result.get(timeout=10) is True
        finally:
            drainer.join(10)


@pytest.mark.usefixtures("server_mode")  # both drivers drain alike
def test_drain_gives_up_on_a_request_that_never_finishes() -> None:
    gate = Gate()
    with (
        serve_app(gated_app(gate)) as live,
        gate,
        live.connect() as client,
    ):
        client.send(get("/slow"))
        gate.wait_entered(1, timeout=5)
        live.server.shutdown()
        live.thread.join(5)
        started = time.monotonic()
        assert live.server.drain(0.3) is False
        assert time.monotonic() - started < 3
        assert client.is_closed(timeout=5)  # broken off
        gate.open()
        assert live.server.drain(10) is True  # the late request ended after all


@pytest.mark.usefixtures("server_mode")  # both drivers drain alike
def test_shutdown_from_another_thread_while_idle() -> None:
    with serve_app(gated_app(Gate())) as live:
        stopper = threading.Thread(target=live.server.shutdown)
        stopper.start()
        stopper.join(5)
        live.thread.join(5)
        assert not live.thread.is_alive()
        assert live.server.drain(1) is True
