"""What the command reads from the project: runserver_plus's settings, its folders."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import CommandError

from runserver_plus.config import DEFAULT_SQL_REPEAT_THRESHOLD, ServerConfig


def drain_timeout() -> float:
    """``RUNSERVER_PLUS_DRAIN_TIMEOUT``: how long a stopping server keeps its
    open connections (seconds)."""
    value = getattr(
        settings, "RUNSERVER_PLUS_DRAIN_TIMEOUT", ServerConfig.drain_timeout
    )
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise CommandError(
            f"RUNSERVER_PLUS_DRAIN_TIMEOUT must be a number of seconds, not {value!r}."
        )
    return seconds


def ca_dir() -> Path:
    """Where the local certificate authority lives: ``RUNSERVER_PLUS_CA_DIR``
    in the environment, then the setting, then the user's data directory."""
    # Imported here: only --https needs the certificate modules.
    from runserver_plus.tls.authority import CA_DIR_ENV, default_ca_dir  # noqa: PLC0415

    setting = getattr(settings, "RUNSERVER_PLUS_CA_DIR", "")
    if setting and not os.environ.get(CA_DIR_ENV):
        return Path(setting)
    return default_ca_dir()


def list_setting(name: str) -> tuple[str, ...]:
    """A list setting ``RUNSERVER_PLUS_<name>`` (empty when unset)."""
    return tuple(str(v) for v in getattr(settings, f"RUNSERVER_PLUS_{name}", ()))


def run_commands(options: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """``--run`` and ``RUNSERVER_PLUS_RUN``, each split as a shell would.

    The supervisor runs them, so ``--run`` with ``--noreload`` is an error;
    the setting is left out there, as ``testserver`` and CI runs want.
    """
    asked = tuple(options.get("run_commands", ()))
    if asked and not options["use_reloader"]:
        raise CommandError(
            "--run needs the reloader: its commands are started and stopped by "
            "the supervisor process, which --noreload leaves out."
        )
    if not options["use_reloader"]:
        return ()
    commands = []
    for text in (*list_setting("RUN"), *asked):
        try:
            argv = tuple(shlex.split(text))
        except ValueError as error:
            raise CommandError(f'--run "{text}": {error}.') from None
        if not argv:
            raise CommandError("--run needs a command; it got an empty one.")
        commands.append(argv)
    return tuple(commands)


def sql_repeat_threshold() -> int:
    """``RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD``, checked: a bad value is a
    one-line error, not a traceback in every request."""
    threshold = getattr(
        settings, "RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD", DEFAULT_SQL_REPEAT_THRESHOLD
    )
    valid = isinstance(threshold, int) and not isinstance(threshold, bool)
    if not valid or threshold < 0 or threshold == 1:
        raise CommandError(
            "RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD must be a whole number of 2 or "
            f"more, or 0 for no warning; it is {threshold!r}."
        )
    return threshold


def project_dir() -> str:
    """The directory of ``manage.py`` (or the working directory for ``-m django``)."""
    script = sys.argv[0] if sys.argv else ""
    if script.endswith(".py") and os.path.isfile(script):
        return os.path.dirname(os.path.abspath(script))
    return os.getcwd()


def settings_ignored_paths() -> tuple[str, ...]:
    return ignored_paths(
        getattr(settings, "MEDIA_ROOT", ""),
        getattr(settings, "STATIC_ROOT", ""),
        getattr(settings, "DATABASES", {}),
    )


def ignored_paths(
    media_root: object, static_root: object, databases: dict[str, dict[str, Any]]
) -> tuple[str, ...]:
    """Paths that change while the server runs without being source code."""
    paths = [media_root, static_root]
    for database in databases.values():
        if "sqlite" in str(database.get("ENGINE", "")):
            paths.append(database.get("NAME"))
    return tuple(os.path.abspath(str(p)) for p in paths if p and str(p) != ":memory:")


def static_dirs() -> tuple[str, ...]:
    """The local directories the staticfiles finders serve from."""
    from django.apps import apps  # noqa: PLC0415

    if not apps.is_installed("django.contrib.staticfiles"):
        return ()
    from django.contrib.staticfiles import finders  # noqa: PLC0415

    found: list[str] = []
    for finder in finders.get_finders():
        storages = getattr(finder, "storages", {})
        for storage in storages.values():
            location = getattr(storage, "location", None)
            if location and os.path.isdir(location):
                found.append(os.path.abspath(location))
    return tuple(dict.fromkeys(found))


def static_path(options: dict[str, Any]) -> str | None:
    """The path static files are served under, or None when Django's rule
    says not to serve them (``--nostatic``, no DEBUG without ``--insecure``,
    staticfiles not installed, a STATIC_URL on another host)."""
    if not options.get("use_static_handler", False):
        return None
    if not (settings.DEBUG or options["insecure_serving"]):
        return None
    from django.contrib.staticfiles.utils import check_settings  # noqa: PLC0415

    check_settings()
    static_url = urlparse(settings.STATIC_URL)
    if static_url.netloc:
        return None  # a CDN URL: nothing local to serve, as Django
    return static_url.path
