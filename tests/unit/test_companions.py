"""Tier 1: how --run names its commands and finds the ones that cannot start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runserver_plus.reloader.companions import cannot_start, names_for, short_name

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX paths and modes")


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["npx", "tailwindcss", "-i", "in.css", "--watch"], "tailwindcss"),
        (["npx", "--yes", "@tailwindcss/cli", "--watch"], "tailwindcss"),
        (["npm", "run", "watch:css"], "watch:css"),
        (["pnpm", "exec", "vite", "build", "--watch"], "vite"),
        (["python", "-m", "http.server"], "http.server"),
        (["/usr/bin/python3.12", "tools/build.py"], "build.py"),
        (["esbuild", "app.js", "--watch"], "esbuild"),
        (["./bin/watch-assets", "--fast"], "watch-assets"),
        (["npx"], "npx"),
    ],
)
def test_short_name(argv: list[str], name: str) -> None:
    assert short_name(argv) == name


def test_names_are_unique() -> None:
    commands = [["esbuild", "a.js"], ["esbuild", "b.js"], ["sass"], ["esbuild", "c"]]
    assert names_for(commands) == ["esbuild", "esbuild-2", "sass", "esbuild-3"]


def test_cannot_start(tmp_path: Path) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\n")
    assert cannot_start("./tool.sh", str(tmp_path)) == "./tool.sh is not executable"
    script.chmod(0o755)
    assert cannot_start("./tool.sh", str(tmp_path)) is None
    assert cannot_start("./gone.sh", str(tmp_path)) == "./gone.sh does not exist"
    (tmp_path / "dir").mkdir()
    assert cannot_start("./dir", str(tmp_path)) == "./dir is not executable"
    assert cannot_start("sh", str(tmp_path)) is None
    missing = "no-such-program-runserver-plus"
    assert cannot_start(missing, str(tmp_path)) == f"{missing} was not found on PATH"
