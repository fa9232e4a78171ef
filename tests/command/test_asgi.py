"""Tier 2: how the command chooses ASGI mode, and what it says about it."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from runserver_plus import asgi_mode
from runserver_plus.asgi_mode import NOTHREADING_ERROR
from tests import asgi_app
from tests.command.test_command import RecordingCommand, config_for, run


def test_wsgi_by_default() -> None:
    assert not config_for().asgi


def test_asgi_option() -> None:
    assert config_for("--asgi").asgi


@override_settings(ASGI_APPLICATION="tests.asgi_app.application")
def test_asgi_application_setting_selects_asgi() -> None:
    assert config_for().asgi


@override_settings(RUNSERVER_PLUS_ASGI=True)
def test_runserver_plus_asgi_setting_selects_asgi() -> None:
    assert config_for().asgi


@override_settings(ASGI_APPLICATION="tests.asgi_app.application")
def test_wsgi_option_wins_over_the_setting() -> None:
    assert not config_for("--wsgi").asgi


def test_asgi_and_wsgi_together_are_a_usage_error() -> None:
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("--asgi", "--wsgi")


def test_nothreading_with_asgi_says_why() -> None:
    with pytest.raises(CommandError) as raised:
        run("--asgi", "--nothreading")
    assert str(raised.value) == NOTHREADING_ERROR
    assert "\n" not in NOTHREADING_ERROR


def test_nothreading_with_wsgi_is_fine_even_with_the_setting() -> None:
    with override_settings(ASGI_APPLICATION="tests.asgi_app.application"):
        assert not config_for("--wsgi", "--nothreading").use_threading


def test_websocket_max_message_defaults_to_one_mib() -> None:
    assert config_for().websocket_max_message == 1024 * 1024


@override_settings(RUNSERVER_PLUS_WEBSOCKET_MAX_MESSAGE=4096)
def test_websocket_max_message_setting() -> None:
    assert config_for().websocket_max_message == 4096


@pytest.mark.parametrize("value", [0, -1, "big", True])
def test_bad_websocket_max_message_is_a_command_error(value: object) -> None:
    with (
        override_settings(RUNSERVER_PLUS_WEBSOCKET_MAX_MESSAGE=value),
        pytest.raises(CommandError, match="RUNSERVER_PLUS_WEBSOCKET_MAX_MESSAGE"),
    ):
        run()


@pytest.mark.parametrize(
    "line",
    [
        "Starting development server at http://127.0.0.1:8000/",
        "Starting WSGI development server at http://127.0.0.1:8000/",
    ],
)
def test_banner_names_the_asgi_server_in_djangos_words(line: str) -> None:
    expected = "Starting ASGI development server at http://127.0.0.1:8000/"
    assert asgi_mode.asgi_banner(f"date\n{line}\nQuit") == f"date\n{expected}\nQuit"


def test_announce_prints_the_asgi_banner() -> None:
    command = RecordingCommand(stdout=io.StringIO(), stderr=io.StringIO())
    call_command(command, "127.0.0.1:0", "--asgi", "--noreload")
    command.announce(4321)
    out = command.stdout._out.getvalue()  # type: ignore[attr-defined]
    assert "Starting ASGI development server at http://127.0.0.1:4321/" in out


@override_settings(ASGI_APPLICATION="tests.asgi_app.application")
def test_asgi_application_setting_is_loaded() -> None:
    assert asgi_mode.load_asgi_application() is asgi_app.application


@override_settings(ASGI_APPLICATION="tests.no_such_module.application")
def test_asgi_application_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'tests\.no_such_module"):
        asgi_mode.load_asgi_application()


def test_project_without_the_setting_gets_djangos_asgi_handler() -> None:
    assert isinstance(asgi_mode.load_asgi_application(), ASGIHandler)


def test_https_with_asgi_serves_https_with_the_same_files() -> None:
    asgi, wsgi = config_for("--asgi", "--https"), config_for("--https")
    assert (asgi.asgi, asgi.https, asgi.url) == (True, True, "https://127.0.0.1")
    assert (asgi.tls_cert, asgi.tls_key, asgi.tls_ca) == (
        wsgi.tls_cert,
        wsgi.tls_key,
        wsgi.tls_ca,
    )
