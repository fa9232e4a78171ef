"""Fixtures that run ``manage.py runserver`` on a migrated copy of the test project."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path

import pytest

from tests.e2e.harness import (
    TESTPROJECT_DIR,
    RunningServer,
    StartServer,
    copy_ignore,
    server_env,
)
from tests.live import SERVER_MODE

_SERVERS = pytest.StashKey[list[RunningServer]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach every server's output to the report of a failed test."""
    report = yield
    if report.failed:
        for server in item.stash.get(_SERVERS, []):
            report.sections.append(
                (f"runserver pid {server.pid} stdout", server.stdout_text())
            )
            report.sections.append(
                (f"runserver pid {server.pid} stderr", server.stderr_text())
            )
    return report


@pytest.fixture(scope="session")
def migrated_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of testproject/ with a migrated database, made once per session."""
    template = tmp_path_factory.mktemp("template") / "testproject"
    shutil.copytree(TESTPROJECT_DIR, template, ignore=copy_ignore)
    # Django's own runserver app set: the database must not depend on the state
    # of the package under test (runserver_plus has no models).
    env = server_env({"TESTPROJECT_DJANGO_RUNSERVER": "1"})
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=template,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"migrate failed:\n{result.stdout}{result.stderr}"
    return template


@pytest.fixture
def project_dir(tmp_path: Path, migrated_project: Path) -> Path:
    """A private, migrated copy of testproject/ that the test may change."""
    project = tmp_path / "testproject"
    shutil.copytree(migrated_project, project)
    return project


@pytest.fixture
def start_server(
    request: pytest.FixtureRequest, project_dir: Path
) -> Iterator[StartServer]:
    """Start ``manage.py runserver *args`` in the project copy; stop it at teardown.

    With ``expect_ready`` the call returns once the banner gave the bound URL.
    A test that uses the ``server_mode`` fixture runs once per mode: in ASGI
    mode testproject sets ``ASGI_APPLICATION``.
    """
    servers: list[RunningServer] = []
    request.node.stash[_SERVERS] = servers

    def start(
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        expect_ready: bool = True,
    ) -> RunningServer:
        if SERVER_MODE.get() == "asgi":
            env = {"TESTPROJECT_ASGI": "1", **(env or {})}
        server = RunningServer(
            [sys.executable, "manage.py", "runserver", *args],
            cwd or project_dir,
            server_env(env),
        )
        servers.append(server)
        if expect_ready:
            server.wait_ready()
        return server

    yield start

    problems: list[str] = []
    for server in servers:
        problems.extend(f"{server!r}: {p}" for p in server.stop())
    if problems:
        pytest.fail(
            "runserver teardown problems:\n"
            + "\n".join(problems)
            + "\n"
            + "\n".join(s.output_report() for s in servers),
            pytrace=False,
        )
