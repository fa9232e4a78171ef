"""Units: which modules a warm process preloads, its command line, staleness."""

from __future__ import annotations

import os
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from runserver_plus.reloader.control import Channel
from runserver_plus.reloader.preload import (
    changed_since,
    lock_files,
    preloadable,
    warm_command,
)
from runserver_plus.reloader.warm import BOOTSTRAP, Preloader


def module(name: str, file: Path | None = None, path: list[str] | None = None):
    mod = types.ModuleType(name)
    if file is not None:
        mod.__file__ = str(file)
    if path is not None:
        mod.__path__ = path
    return mod


def test_preloadable_keeps_what_is_outside_the_project_in_import_order(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    system = tmp_path / "lib" / "python3" / "site-packages"
    venv_in_project = project / ".venv" / "lib" / "site-packages"
    elsewhere = tmp_path / "local-package"
    modules = {
        "os": module("os", system.parent / "os.py"),
        "sys": module("sys"),  # built in: no file
        "__main__": module("__main__", project / "manage.py"),
        "mysite": module("mysite", project / "mysite" / "__init__.py"),
        "mysite.settings": module("mysite.settings", project / "mysite/settings.py"),
        "django": module("django", venv_in_project / "django" / "__init__.py"),
        "blog": module("blog", project / "blog" / "__init__.py"),
        "blog.views": module("blog.views", project / "blog" / "views.py"),
        "nsproject": module("nsproject", path=[str(project / "nsproject")]),
        "nslib": module("nslib", path=[str(elsewhere / "nslib")]),
        "locallib": module("locallib", elsewhere / "locallib.py"),
        "missing": None,
    }

    names = preloadable(
        modules,
        [str(project)],
        settings_module="mysite.settings",
        system=[
            os.path.join(str(system.parent.parent), ""),
            os.path.join(str(venv_in_project), ""),
        ],
    )

    assert names == ["os", "sys", "django", "nslib", "locallib"]


def test_preloadable_leaves_out_the_settings_module_wherever_it_lives(
    tmp_path: Path,
) -> None:
    modules = {
        "conf": module("conf", tmp_path / "elsewhere" / "conf" / "__init__.py"),
        "conf.settings": module("conf.settings", tmp_path / "elsewhere" / "conf/s.py"),
        "confx": module("confx", tmp_path / "elsewhere" / "confx.py"),
    }

    names = preloadable(
        modules,
        [str(tmp_path / "project")],
        settings_module="conf.settings",
        system=[],
    )

    assert names == ["confx"]


def test_warm_command_runs_the_script_from_its_real_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "manage.py").write_text("")
    (tmp_path / "link.py").symlink_to(project / "manage.py")
    child = ["/usr/bin/python3", "-Wdefault", "-Xdev", "link.py", "runserver", "8000"]

    command = warm_command(child, str(tmp_path), "BOOT")

    assert command == [
        "/usr/bin/python3",
        "-Wdefault",
        "-Xdev",
        "-c",
        "BOOT",
        str(project),
        "link.py",
        "runserver",
        "8000",
    ]


def test_warm_command_runs_a_module_from_the_working_directory(tmp_path: Path) -> None:
    child = ["python", "-m", "django", "runserver"]

    command = warm_command(child, str(tmp_path), BOOTSTRAP)

    assert command == [
        "python",
        "-c",
        BOOTSTRAP,
        str(tmp_path),
        "-m",
        "django",
        "runserver",
    ]


@pytest.mark.parametrize(
    "child",
    [
        [],
        ["python"],
        ["python", "-m"],
        ["python", "missing.py", "runserver"],
        ["python", "-c", "code"],
        ["python", "django-admin.exe", "runserver"],
    ],
)
def test_warm_command_refuses_what_it_cannot_run(
    tmp_path: Path, child: list[str]
) -> None:
    (tmp_path / "django-admin.exe").write_text("")

    assert warm_command(child, str(tmp_path), BOOTSTRAP) is None


def test_changed_since_names_a_changed_or_missing_file(tmp_path: Path) -> None:
    old = tmp_path / "old.py"
    old.write_text("")
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    since = old.stat().st_ctime_ns + 1
    new = tmp_path / "new.py"
    new.write_text("")
    os.utime(new, ns=(since + 10, since + 10))

    assert changed_since([str(old)], since + 1_000_000_000) is None
    assert changed_since([str(old), str(new)], since) == str(new)
    assert changed_since([str(tmp_path / "gone.py")], since) == str(
        tmp_path / "gone.py"
    )


def test_lock_files_are_found_in_each_folder(tmp_path: Path) -> None:
    for name in ("requirements.txt", "requirements-dev.txt", "uv.lock", "notes.txt"):
        (tmp_path / name).write_text("")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "poetry.lock").write_text("")
    (sub / "Pipfile.lock").write_text("")

    assert lock_files([str(tmp_path), str(sub)]) == sorted(
        str(p)
        for p in (
            tmp_path / "requirements.txt",
            tmp_path / "requirements-dev.txt",
            tmp_path / "uv.lock",
            sub / "poetry.lock",
            sub / "Pipfile.lock",
        )
    )


# The preloader, in this process, on a real package folder.


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "packages"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    before = set(sys.modules)
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            del sys.modules[name]


@pytest.fixture
def preloader() -> Iterator[Preloader]:
    ours, theirs = socket.socketpair()
    channel = Channel(ours)
    try:
        yield Preloader(channel)
    finally:
        channel.close()
        theirs.close()


def test_a_failed_import_is_undone_with_what_it_imported(
    packages: Path, preloader: Preloader
) -> None:
    pkg = packages / "rsp_halfway"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("VALUE = 1\n")
    (pkg / "models.py").write_text(
        "from rsp_halfway import helper\n"
        "raise RuntimeError('Apps aren\\'t loaded yet.')\n"
    )
    (packages / "rsp_fine.py").write_text("VALUE = 2\n")

    assert preloader._load("rsp_halfway.models") == (set(), "")
    assert preloader._load("rsp_fine") == ({"rsp_fine"}, "")

    assert "rsp_halfway" not in sys.modules
    assert "rsp_halfway.helper" not in sys.modules
    assert "rsp_halfway.models" not in sys.modules
    assert sys.modules["rsp_fine"].VALUE == 2
    assert preloader.loaded == 1


def test_imported_files_include_lock_files_and_module_files(
    packages: Path, preloader: Preloader, tmp_path: Path
) -> None:
    (packages / "rsp_tracked.py").write_text("")
    (tmp_path / "uv.lock").write_text("")
    preloader.lock_dirs = (str(tmp_path),)

    preloader._load("rsp_tracked")

    files = preloader.imported_files()
    assert str(packages / "rsp_tracked.py") in files
    assert str(tmp_path / "uv.lock") in files
    assert __file__ in files


def test_an_import_that_starts_a_thread_is_unsafe(
    packages: Path, preloader: Preloader
) -> None:
    (packages / "rsp_threads.py").write_text(
        "import threading\n"
        "STOP = threading.Event()\n"
        "THREAD = threading.Thread(target=STOP.wait, daemon=True)\n"
        "THREAD.start()\n"
    )
    try:
        assert preloader._load("rsp_threads") == ({"rsp_threads"}, "started a thread")
    finally:
        sys.modules["rsp_threads"].STOP.set()
        sys.modules["rsp_threads"].THREAD.join(5)


def test_an_import_that_keeps_a_file_open_is_unsafe(
    packages: Path, preloader: Preloader
) -> None:
    (packages / "rsp_files.py").write_text(f"LOG = open({__file__!r})\n")
    try:
        assert preloader._load("rsp_files") == ({"rsp_files"}, "kept a file open")
    finally:
        sys.modules["rsp_files"].LOG.close()


def test_an_import_of_a_project_module_is_unsafe(
    packages: Path, preloader: Preloader
) -> None:
    (packages / "rsp_project").mkdir()
    (packages / "rsp_project" / "__init__.py").write_text("")
    (packages / "rsp_lib.py").write_text("import rsp_project\n")
    preloader.roots = (os.path.join(str(packages / "rsp_project"), ""),)

    added, why = preloader._load("rsp_lib")

    assert added == {"rsp_lib", "rsp_project"}
    assert why == "imported rsp_project, a module of the project"
