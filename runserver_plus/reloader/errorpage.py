"""The page the supervisor serves while the project cannot start."""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Iterable, Iterator

from runserver_plus.livereload.middleware import EVENTS_PATH, HEARTBEAT, RETRY
from runserver_plus.server.wsgi import StartResponse, WSGIEnviron, respond

#: The reserved path the error page polls; a worker's 404 for it also means
#: "the code works again", so workers need not know it.
STATUS_PATH = "/__runserver_plus__/status"
#: How long one status poll may wait for the state to change.
LONG_POLL = 20.0  # s

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #222; }}
header {{ background: #ffc; border-bottom: 1px solid #ddd; padding: 16px 24px; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
main {{ padding: 16px 24px; }}
pre {{ background: #f6f6f6; border: 1px solid #ddd; padding: 12px; overflow: auto;
       font: 13px/1.4 ui-monospace, monospace; white-space: pre-wrap; }}
#state {{ color: #666; }}
</style></head>
<body><header><h1>{title}</h1>
<div id="state">{summary} This page reloads by itself once the code is fixed.</div>
</header><main>{details}</main>
<script>
(function () {{
  var id = {error_id};
  function poll() {{
    fetch("{status_path}?id=" + id, {{cache: "no-store"}}).then(function (r) {{
      if (r.status !== 200) {{ location.reload(); return null; }}
      return r.json();
    }}).then(function (state) {{
      if (state === null) return;
      if (state.broken && state.id === id) {{ poll(); }} else {{ location.reload(); }}
    }}, function () {{ setTimeout(poll, 500); }});
  }}
  poll();
}})();
</script></body></html>
"""


class ErrorPage:
    """A WSGI app answering every request with the startup failure (status 500)."""

    def __init__(
        self,
        error_text: str,
        error_id: int,
        *,
        debug: bool,
        title: str = "The project failed to start",
    ) -> None:
        self.error_text = error_text
        self.error_id = error_id
        self.debug = debug
        self.title = title
        self._done = threading.Event()

    def finish(self) -> None:
        """The code changed: answer pending status polls so pages reload."""
        self._done.set()

    def __call__(
        self, environ: WSGIEnviron, start_response: StartResponse
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == STATUS_PATH:
            return self._status(environ, start_response)
        if environ.get("PATH_INFO") == EVENTS_PATH:
            return self._events(environ, start_response)
        return respond(
            start_response,
            "500 Internal Server Error",
            "text/html; charset=utf-8",
            self.render().encode(),
        )

    def _status(
        self, environ: WSGIEnviron, start_response: StartResponse
    ) -> Iterable[bytes]:
        environ["runserver_plus.quiet"] = True  # polls would flood the log
        query = environ.get("QUERY_STRING", "")
        if f"id={self.error_id}" in query.split("&"):
            self._done.wait(LONG_POLL)
        state = {"broken": not self._done.is_set(), "id": self.error_id}
        return respond(
            start_response, "200 OK", "application/json", json.dumps(state).encode()
        )

    def _events(
        self, environ: WSGIEnviron, start_response: StartResponse
    ) -> Iterable[bytes]:
        """The live reload stream of the tabs open when the code broke (they
        reconnect into the backlog when the worker stops): tell them at once,
        so they reload and show this page; end when the code changes."""
        environ["runserver_plus.quiet"] = True
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/event-stream"),
                ("Cache-Control", "no-store"),
                ("X-Accel-Buffering", "no"),
            ],
        )
        return self._broken_stream()

    def _broken_stream(self) -> Iterator[bytes]:
        broken = json.dumps({"type": "broken", "id": self.error_id})
        yield f"retry: {RETRY}\nevent: change\ndata: {broken}\n\n".encode()
        while not self._done.wait(HEARTBEAT):
            yield b": ping\n\n"

    def render(self) -> str:
        title = self.title
        if self.debug:
            summary = f"{title}; what it printed is below."
            details = f"<pre>{html.escape(self.error_text)}</pre>"
        else:
            summary = "The error is shown in the terminal (DEBUG is False)."
            details = ""
        return _PAGE.format(
            title=title,
            summary=summary,
            details=details,
            error_id=self.error_id,
            status_path=STATUS_PATH,
        )
