"""Tier 2: the command, its hand-off seam recording the config instead of serving."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.test import override_settings

from runserver_plus import checks
from runserver_plus.config import ServerConfig
from runserver_plus.management.commands.runserver import (
    CoreCommand,
    StaticfilesCommand,
)
from runserver_plus.project import ignored_paths
from runserver_plus.static import StaticFilesApp


class RecordingCommand(StaticfilesCommand):
    """The real command, except that it records the config instead of serving."""

    config: ServerConfig | None = None

    def hand_off(self, config: ServerConfig) -> None:
        self.config = config


def run(*args: str, **options: Any) -> RecordingCommand:
    command = RecordingCommand(stdout=io.StringIO(), stderr=io.StringIO())
    call_command(command, *args, **options)
    assert command.config is not None
    return command


def config_for(*args: str, **options: Any) -> ServerConfig:
    config = run(*args, **options).config
    assert config is not None
    return config


@pytest.mark.parametrize(
    ("args", "addr", "port", "ipv6", "display"),
    [
        ((), "127.0.0.1", 8000, False, "127.0.0.1"),
        (("8000",), "127.0.0.1", 8000, False, "127.0.0.1"),
        (("0",), "127.0.0.1", 0, False, "127.0.0.1"),
        (("0:8000",), "0", 8000, False, "0.0.0.0"),
        (("0.0.0.0:8000",), "0.0.0.0", 8000, False, "0.0.0.0"),
        (("1.2.3.4:7000",), "1.2.3.4", 7000, False, "1.2.3.4"),
        (("[::1]:8000",), "::1", 8000, True, "[::1]"),
        (("[2001:db8::1]:7000",), "2001:db8::1", 7000, True, "[2001:db8::1]"),
        (("-6",), "::1", 8000, True, "[::1]"),
        (("-6", "7000"), "::1", 7000, True, "[::1]"),
        (("localhost:8000",), "localhost", 8000, False, "localhost"),
        (("-6", "localhost:8000"), "localhost", 8000, True, "localhost"),
        (
            ("test.domain.local:7000",),
            "test.domain.local",
            7000,
            False,
            "test.domain.local",
        ),
        (("00080",), "127.0.0.1", 80, False, "127.0.0.1"),
        (("١٢٣",), "127.0.0.1", 123, False, "127.0.0.1"),
    ],
)
def test_addrport_forms_as_django_parses_them(args, addr, port, ipv6, display):
    config = config_for(*args)
    assert (config.addr, config.port, config.use_ipv6, config.display_addr) == (
        addr,
        port,
        ipv6,
        display,
    )


@pytest.mark.parametrize(
    "addrport",
    ["::1:8000", "[::1]", "localhost", ":8000", "8000:", "abc", "80a", "my_host:8000",
     "localhost.:8000", "[fe80::1%eth0]:8000", "1.2.3.4"],
)  # fmt: skip
def test_invalid_addrport_is_djangos_command_error(addrport):
    with pytest.raises(CommandError) as error:
        run(addrport)
    assert str(error.value) == (
        f'"{addrport}" is not a valid port number or address:port pair.'
    )


def test_ipv4_literal_with_ipv6_flag_is_refused():
    with pytest.raises(CommandError, match=r'"127.0.0.1" is not a valid IPv6 address.'):
        run("-6", "127.0.0.1:8000")


@pytest.mark.parametrize("addrport", ["99999", "127.0.0.1:65536", "[::1]:70000"])
def test_port_out_of_range_is_a_command_error_not_a_traceback(addrport):
    with pytest.raises(CommandError, match=r"port must be between 0 and 65535"):
        run(addrport)


def test_port_65535_is_accepted():
    assert config_for("65535").port == 65535


def test_flags_reach_the_config():
    config = config_for("--noreload", "--nothreading")
    assert config.use_reloader is False
    assert config.use_threading is False
    assert config_for().use_reloader is True
    assert config_for().use_threading is True


def test_testserver_keywords_are_accepted():
    # django.core.management.commands.testserver calls runserver this way.
    config = config_for(
        addrport="127.0.0.1:0",
        shutdown_message="bye",
        use_reloader=False,
        use_ipv6=False,
        use_threading=True,
    )
    assert config.shutdown_message == "bye"
    assert config.use_reloader is False


def test_watch_options_and_settings_reach_the_config(tmp_path, settings):
    settings.RUNSERVER_PLUS_WATCH_DIRS = [str(tmp_path / "a")]
    settings.RUNSERVER_PLUS_WATCH_EXCLUDE = ["*.tmp"]
    config = config_for(
        "--watch-dir", str(tmp_path / "b"),
        "--watch-include", "*.env",
        "--watch-exclude", "build/**",
        "--watch-poll",
    )  # fmt: skip
    assert config.extra_watch_dirs == (str(tmp_path / "a"), str(tmp_path / "b"))
    assert config.watch_include == ("*.env",)
    assert config.watch_exclude == ("*.tmp", "build/**")
    assert config.force_polling is True


def test_the_drain_timeout_setting_reaches_the_config(settings):
    assert config_for().drain_timeout == 3.0
    settings.RUNSERVER_PLUS_DRAIN_TIMEOUT = 1.5
    assert config_for().drain_timeout == 1.5


@pytest.mark.parametrize("value", [-1, "soon", None, float("nan")])
def test_a_drain_timeout_that_is_no_duration_is_a_command_error(settings, value):
    settings.RUNSERVER_PLUS_DRAIN_TIMEOUT = value
    with pytest.raises(CommandError, match="RUNSERVER_PLUS_DRAIN_TIMEOUT must be"):
        config_for()


def test_media_static_root_and_sqlite_files_are_ignored(tmp_path):
    databases = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "db"},
        "memory": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "other": {"ENGINE": "django.db.backends.postgresql", "NAME": "app"},
    }
    ignored = ignored_paths(tmp_path / "media", str(tmp_path / "collected"), databases)
    assert ignored == (
        str(tmp_path / "media"),
        str(tmp_path / "collected"),
        str(tmp_path / "db"),
    )


def test_the_project_paths_reach_the_config(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    config = config_for()
    assert str(tmp_path / "media") in config.ignored_paths
    assert os.path.isdir(config.project_dir)


def test_empty_allowed_hosts_with_debug_off_is_djangos_error(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = []
    with pytest.raises(CommandError, match=r"You must set settings.ALLOWED_HOSTS"):
        run()


def test_help_hides_what_django_hides_and_lists_our_options():
    parser = RecordingCommand().create_parser("manage.py", "runserver")
    text = parser.format_help()
    assert "--verbosity" not in text
    assert "--traceback" not in text
    for option in ("--nostatic", "--insecure", "--skip-checks", "--watch-dir",
                   "--watch-include", "--watch-exclude", "--watch-poll",
                   "--print-sql", "--run"):  # fmt: skip
        assert option in text


def test_the_staticfiles_variant_is_used_when_staticfiles_is_installed():
    command = load_command_class("runserver_plus", "runserver")
    assert isinstance(command, StaticfilesCommand)


@override_settings(INSTALLED_APPS=["runserver_plus", "django.contrib.contenttypes"])
def test_the_core_variant_is_used_without_staticfiles():
    command = load_command_class("runserver_plus", "runserver")
    assert isinstance(command, CoreCommand)
    assert (
        "--nostatic"
        not in command.create_parser("manage.py", "runserver").format_help()
    )


# --- the static handler decision (Django's rule, our wrapper) -----------------


def handler_for(*args: str, debug: bool, settings: Any) -> object:
    settings.DEBUG = debug
    command = run(*args)
    return command.get_handler(**command.options)


def test_static_files_are_served_with_debug(settings):
    handler = handler_for(debug=True, settings=settings)
    assert isinstance(handler, StaticFilesApp)
    assert handler.base_path == "/static/"


def test_nostatic_wins_over_insecure(settings):
    handler = handler_for("--nostatic", "--insecure", debug=True, settings=settings)
    assert not isinstance(handler, StaticFilesApp)


def test_no_static_files_without_debug_unless_insecure(settings):
    assert not isinstance(handler_for(debug=False, settings=settings), StaticFilesApp)
    assert isinstance(
        handler_for("--insecure", debug=False, settings=settings), StaticFilesApp
    )


def test_a_static_url_on_another_host_is_not_served(settings):
    settings.STATIC_URL = "https://cdn.example.com/static/"
    assert not isinstance(handler_for(debug=True, settings=settings), StaticFilesApp)


# --- loading the application ---------------------------------------------------


@pytest.fixture
def closes_connections():
    """The migration check opens a connection in this thread; later tests that
    fire request signals (which look at open connections) must not find it."""
    from django.db import connections

    yield
    connections.close_all()


@pytest.mark.django_db
@pytest.mark.usefixtures("closes_connections")
def test_load_application_runs_the_checks_then_builds_the_handler(settings):
    settings.DEBUG = True
    command = run("--noreload")
    command.options["skip_checks"] = False
    app = command.load_application()
    assert isinstance(app, StaticFilesApp)
    out = command.stdout._out.getvalue()  # type: ignore[attr-defined]
    assert out.startswith(
        "Performing system checks...\n\nSystem check identified no issues"
    )


@pytest.mark.django_db
@pytest.mark.usefixtures("closes_connections")
def test_skip_checks_skips_the_system_checks_only(settings):
    command = run("--noreload", "--skip-checks")
    command.load_application()
    assert "Performing system checks" not in command.stdout._out.getvalue()  # type: ignore[attr-defined]


# --- the banner ----------------------------------------------------------------


def test_banner_is_djangos_with_the_real_port(settings):
    command = run("127.0.0.1:0")
    command.announce(43210)
    out = command.stdout._out.getvalue()  # type: ignore[attr-defined]
    assert "development server at http://127.0.0.1:43210/\n" in out
    assert "Quit the server with CONTROL-C." in out
    assert "reached at" not in out


def test_wildcard_banner_lists_urls_and_warns(settings):
    command = run("0.0.0.0:8000")
    command.announce(8000)
    out = command.stdout._out.getvalue()  # type: ignore[attr-defined]
    assert "http://0.0.0.0:8000/" in out
    assert "  http://127.0.0.1:8000/" in out
    assert "Other machines on your network can reach this server" in out


# --- the system check ----------------------------------------------------------


def test_no_warning_when_listed_above_staticfiles():
    assert checks.check_command_order() == []


@override_settings(
    INSTALLED_APPS=[
        "django.contrib.staticfiles",
        "runserver_plus",
        "django.contrib.contenttypes",
    ]
)
def test_warning_when_listed_below_an_app_with_a_runserver_command():
    (warning,) = checks.check_command_order()
    assert warning.id == "runserver_plus.W001"
    assert "'django.contrib.staticfiles'" in warning.msg
    assert "Move 'runserver_plus' above" in (warning.hint or "")


def test_the_check_is_registered():
    from django.core.checks import registry

    registered: list[object] = list(registry.registry.get_checks())
    assert checks.check_command_order in registered


def test_importing_the_command_module_reads_no_settings(tmp_path):
    # No import-time side effects: a fresh interpreter without settings can
    # import every module of the package.
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, runserver_plus\n"
        "for m in pkgutil.walk_packages(runserver_plus.__path__, 'runserver_plus.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- --print-sql ---------------------------------------------------------------


def query_layers(handler: object) -> list[object]:
    """The ``--print-sql`` layers in a handler chain."""
    from runserver_plus.queries import QueryLogApp

    found: list[object] = []
    while handler is not None:
        if isinstance(handler, QueryLogApp):
            found.append(handler)
        handler = getattr(handler, "app", None)
    return found


def test_print_sql_reaches_the_config_and_verbosity_2_adds_each_query():
    assert config_for().print_sql is False
    config = config_for("--print-sql")
    assert (config.print_sql, config.print_sql_queries) == (True, False)
    assert config.sql_repeat_threshold == 10
    config = config_for("--print-sql", "-v", "2")
    assert (config.print_sql, config.print_sql_queries) == (True, True)
    assert config_for("-v", "2").print_sql_queries is False


def test_print_sql_and_its_threshold_as_settings(settings):
    settings.RUNSERVER_PLUS_PRINT_SQL = True
    settings.RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD = 0
    config = config_for()
    assert (config.print_sql, config.sql_repeat_threshold) == (True, 0)


@pytest.mark.parametrize("value", [1, -1, "10", 2.5, True, None])
def test_a_bad_repeat_threshold_is_a_command_error(settings, value):
    settings.RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD = value
    with pytest.raises(CommandError, match=r"RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD must"):
        run("--print-sql")


def test_print_sql_puts_its_layer_right_behind_djangos_handler(settings):
    from django.core.handlers.wsgi import WSGIHandler

    settings.DEBUG = True
    command = run("--print-sql")
    handler = command.get_handler(**command.options)
    assert isinstance(handler, StaticFilesApp)
    (layer,) = query_layers(handler)
    assert isinstance(layer.app, WSGIHandler)  # type: ignore[attr-defined]


def test_without_print_sql_there_is_no_query_layer(settings):
    settings.DEBUG = True
    command = run()
    assert query_layers(command.get_handler(**command.options)) == []
    command = run("--nostatic")
    assert query_layers(command.get_handler(**command.options)) == []


# --- --run -------------------------------------------------------------------------


def test_run_commands_are_split_as_a_shell_would_without_one(settings):
    settings.RUNSERVER_PLUS_RUN = ["npx tailwindcss -i in.css -o 'static/out put.css'"]
    config = config_for("--run", "esbuild app.js --watch", "--run=echo $HOME")
    assert config.run_commands == (
        ("npx", "tailwindcss", "-i", "in.css", "-o", "static/out put.css"),
        ("esbuild", "app.js", "--watch"),
        ("echo", "$HOME"),
    )
    assert config_for().run_commands == (
        ("npx", "tailwindcss", "-i", "in.css", "-o", "static/out put.css"),
    )


def test_run_with_noreload_is_a_command_error_that_says_why():
    with pytest.raises(CommandError) as error:
        run("--noreload", "--run", "npx tailwindcss --watch")
    assert str(error.value) == (
        "--run needs the reloader: its commands are started and stopped by the "
        "supervisor process, which --noreload leaves out."
    )


def test_the_run_setting_is_left_out_with_noreload(settings):
    settings.RUNSERVER_PLUS_RUN = ["npx tailwindcss --watch"]
    assert config_for("--noreload").run_commands == ()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("npx 'unclosed", '--run "npx \'unclosed": No closing quotation.'),
        ("", "--run needs a command; it got an empty one."),
        ("   ", "--run needs a command; it got an empty one."),
    ],
)
def test_a_run_command_that_cannot_be_split_is_a_command_error(command, message):
    with pytest.raises(CommandError) as error:
        run("--run", command)
    assert str(error.value) == message


def test_the_colour_decision_is_djangos(monkeypatch):
    # Django's runserver sets DJANGO_COLORS=nocolor for --no-color, for good:
    # setenv() first, so that teardown puts back what was there before.
    monkeypatch.setenv("DJANGO_COLORS", "")
    assert config_for("--force-color").colour is True
    assert config_for("--no-color").colour is False
    monkeypatch.setenv("DJANGO_COLORS", "nocolor")
    assert config_for("--force-color").colour is False
