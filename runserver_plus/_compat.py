"""The private or version-dependent parts of Django that runserver_plus touches."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import django
from django.core.management.base import BaseCommand

if TYPE_CHECKING:
    from django.http import StreamingHttpResponse


def system_check_kwargs(
    command: BaseCommand, options: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments Django's ``inner_run`` passes to ``check()``.

    Django >= 5.2 builds them with ``BaseCommand.get_check_kwargs`` (runserver
    overrides it to skip the check in ``execute()``, so the base class's is the
    one that selects every check); Django 4.2 has no such hook and checks
    everything.
    """
    base = getattr(BaseCommand, "get_check_kwargs", None)  # Django >= 5.2
    kwargs: dict[str, Any] = dict(base(command, options)) if base is not None else {}
    kwargs["display_num_errors"] = True
    return kwargs


def reset_settings() -> None:
    """Make Django's settings load their module again on their next use.

    Django 4.2 to 6.1: ``LazySettings`` keeps the loaded ``Settings`` in
    ``_wrapped``, which holds ``empty`` before the first use. A warm process
    (reloader/warm.py) loaded them to preload the installed packages; the
    worker it becomes executes the settings module afresh.
    """
    from django.conf import settings  # noqa: PLC0415
    from django.utils.functional import empty  # noqa: PLC0415

    settings._wrapped = empty


def left_stream_closer(response: StreamingHttpResponse) -> Callable[[], None]:
    """What closes a response's sync iterator when its client went away
    midway: to be called in the request's thread (see ``asgi_handler``),
    before the response's streaming content is replaced.

    Django 4.2's ``ASGIHandler`` closes a response only once it was sent
    whole; a send that fails leaves it open: close the response (its
    iterator, then ``request_finished``). Django >= 5.0 listens for the
    disconnect, cancels the send and sends ``request_finished`` itself (6.0
    also closes the response): close the iterator only, which
    ``StreamingHttpResponse`` keeps in ``_iterator`` (4.2 to 6.1), so that a
    generator's ``finally`` runs at once.
    """
    if django.VERSION < (5, 0):
        return response.close
    iterator = response._iterator  # type: ignore[attr-defined]
    close: Callable[[], None] | None = getattr(iterator, "close", None)
    return close if close is not None else _nothing


def _nothing() -> None:
    """Nothing to close."""
