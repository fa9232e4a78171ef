"""One keep-alive client of the soak: a mix of requests, each answer checked."""

from __future__ import annotations

import collections
import hashlib
import json
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 10.0  # s, per socket operation of a request
MAX_REQUESTS = 2_000_000  # per client, on top of the time bound
#: After a refused connection the client pauses this long, as a browser
#: showing an error page would, instead of counting thousands of refusals.
REFUSED_PAUSE = 0.05  # s
MAX_ECHO_BODY = 32 * 1024  # bytes
MAX_RANGE = 64 * 1024  # bytes
MAX_EXAMPLES = 20  # errors kept with their details

# Error kinds: a request that was sent (or could not be) and got no complete,
# correct response.
REFUSED = "refused"
RESET = "reset unanswered"
EOF = "EOF unanswered"
TIMEOUT = "timeout"
WRONG = "wrong body"
KINDS = (REFUSED, RESET, EOF, TIMEOUT, WRONG)

#: What the clients ask for, with weights.
MIX = (("hello", 40), ("echo", 25), ("static", 15), ("range", 20))


class Unanswered(Exception):
    """The request got no complete, correct response; ``kind`` says how."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass
class Tally:
    """What one client saw; merged across clients at the end."""

    sent: int = 0
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Connections the server closed while they were idle, seen before reuse
    #: (not errors: no request was on them).
    closed_idle: int = 0
    connections: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.errors.update(other.errors)
        self.closed_idle += other.closed_idle
        self.connections += other.connections
        room = MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[:room])


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


class Wire:
    """A socket with a read buffer: responses read by hand, so that how a
    connection ended (RST, FIN, timeout) is seen exactly."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), REQUEST_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def closed_while_idle(self) -> bool:
        """Whether the server closed (or reset) the connection since the last
        response: checked before reusing it, as browsers do."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _fill(self) -> None:
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError as error:
            raise Unanswered(RESET, str(error)) from None
        except TimeoutError:
            raise Unanswered(TIMEOUT, "no response within the timeout") from None
        except OSError as error:
            raise Unanswered(RESET, str(error)) from None
        if not data:
            raise Unanswered(EOF, f"EOF after {len(self.buffer)} bytes of a response")
        self.buffer += data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _line(self, end: bytes = b"\r\n") -> bytes:
        while end not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(end, 1)
        return line

    def exchange(self, request: bytes, *, head: bool = False) -> Answer:
        try:
            self.sock.sendall(request)
        except TimeoutError:
            raise Unanswered(TIMEOUT, "sending timed out") from None
        except OSError as error:
            raise Unanswered(RESET, f"while sending: {error}") from None
        raw = self._line(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(raw[0].split(" ", 2)[1])
        headers = {}
        for line in raw[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(self._line().split(b";")[0], 16):
                body += self._take(size)
                self._take(2)
            while self._line():  # trailers
                pass
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:  # delimited by the close
            body = self.buffer
            while True:
                try:
                    data = self.sock.recv(262144)
                except OSError as error:
                    raise Unanswered(RESET, str(error)) from None
                if not data:
                    break
                body += data
            self.buffer = b""
            headers["connection"] = "close"
        return Answer(status, headers, body)


class SoakClient(threading.Thread):
    """Sends the mix back to back on one keep-alive connection (a new one
    when the server closes it) until ``stop_at``; checks every answer."""

    def __init__(
        self, port: int, files: dict[str, bytes], seed: int, stop_at: float
    ) -> None:
        super().__init__(name=f"soak-client-{seed}", daemon=True)
        self.port = port
        self.files = files
        self.rng = random.Random(seed)
        self.stop_at = stop_at
        self.halt = threading.Event()
        self.tally = Tally()
        self._kinds = [kind for kind, weight in MIX for _ in range(weight)]

    def run(self) -> None:
        wire: Wire | None = None
        try:
            for _ in range(MAX_REQUESTS):
                if self.halt.is_set() or time.monotonic() >= self.stop_at:
                    return
                if wire is not None and wire.closed_while_idle():
                    self.tally.closed_idle += 1
                    wire.close()
                    wire = None
                if wire is None:
                    try:
                        wire = Wire(self.port)
                    except ConnectionRefusedError:
                        self._error(Unanswered(REFUSED, "connection refused"))
                        self.halt.wait(REFUSED_PAUSE)  # pacing, see REFUSED_PAUSE
                        continue
                    except TimeoutError:
                        self._error(Unanswered(TIMEOUT, "connect timed out"))
                        continue
                    except OSError as error:
                        self._error(Unanswered(RESET, f"connect: {error}"))
                        continue
                    self.tally.connections += 1
                self.tally.sent += 1
                try:
                    answer = self._one(wire)
                except Unanswered as error:
                    self._error(error)
                    wire.close()
                    wire = None
                    continue
                self.tally.ok += 1
                if answer.closes:
                    wire.close()
                    wire = None
        finally:
            if wire is not None:
                wire.close()

    def _error(self, error: Unanswered) -> None:
        self.tally.errors[error.kind] += 1
        if len(self.tally.examples) < MAX_EXAMPLES:
            self.tally.examples.append(f"{time.monotonic():.3f} {error}")

    def _request(
        self, method: str, path: str, extra: str = "", body: bytes = b""
    ) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{extra}"
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        return (head + "\r\n").encode("latin-1") + body

    def _one(self, wire: Wire) -> Answer:
        kind = self.rng.choice(self._kinds)
        if kind == "hello":
            answer = wire.exchange(self._request("GET", "/hello/"))
            expect(answer.status == 200 and answer.body == b"Hello, world!\n", answer)
        elif kind == "echo":
            body = self.rng.randbytes(self.rng.randrange(MAX_ECHO_BODY))
            extra = "Content-Type: application/octet-stream\r\n"
            answer = wire.exchange(self._request("POST", "/echo/", extra, body))
            expect(answer.status == 200, answer)
            try:
                echoed = json.loads(answer.body)
            except ValueError:
                expect(False, answer)
            expect(echoed.get("sha256") == hashlib.sha256(body).hexdigest(), answer)
        elif kind == "static":
            name, content = self.rng.choice(sorted(self.files.items()))
            answer = wire.exchange(self._request("GET", f"/static/{name}"))
            expect(answer.status == 200 and answer.body == content, answer)
        else:
            name, content = self.rng.choice(sorted(self.files.items()))
            first = self.rng.randrange(len(content))
            last = min(len(content), first + self.rng.randrange(1, MAX_RANGE)) - 1
            extra = f"Range: bytes={first}-{last}\r\n"
            answer = wire.exchange(self._request("GET", f"/static/{name}", extra))
            if answer.status == 206:
                expect(answer.body == content[first : last + 1], answer)
                expect(
                    answer.headers.get("content-range")
                    == f"bytes {first}-{last}/{len(content)}",
                    answer,
                )
            else:  # a server may ignore Range (Django's does): the whole file
                expect(answer.status == 200 and answer.body == content, answer)
        return answer


def expect(condition: bool, answer: Answer) -> None:
    if not condition:
        raise Unanswered(
            WRONG,
            f"status {answer.status}, {len(answer.body)} bytes: {answer.body[:80]!r}",
        )
