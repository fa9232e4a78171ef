"""What is watched and what a change means: the watch rules, pure."""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path

from runserver_plus.reloader.preload import system_prefixes

#: Directory names never worth an OS watch: VCS, caches, dependencies, virtualenvs.
IGNORED_DIR_NAMES = frozenset(
    {
        ".direnv",
        ".eggs",
        ".git",
        ".hg",
        ".hypothesis",
        ".idea",
        ".mypy_cache",
        ".nox",
        ".pytest_cache",
        ".ruff_cache",
        ".svn",
        ".tox",
        ".venv",
        ".vscode",
        "__pycache__",
        "__pypackages__",
        "htmlcov",
        "node_modules",
        "site-packages",
        "venv",
    }
)

#: File names that are never a source change: bytecode, editor swap and backup
#: files, SQLite databases and their journals.
IGNORED_FILE_NAMES = re.compile(
    r"""
    \.py[cod]$ | \.sw[a-p]$ | ~$ | ^\.\# | ^\#.*\#$ | ^\.DS_Store$ | ^flycheck_
    | ^4913$ | \.___jb_\w+___$
    | \.(?:sqlite3?|db)(?:-journal|-wal|-shm)?$
    """,
    re.VERBOSE,
)


class Action(enum.Enum):
    """What a changed file asks of the supervisor."""

    IGNORE = "ignore"
    RESTART = "restart"  # Python code: a new worker
    OFFER = "offer"  # a watched non-Python file: the worker may handle it


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A ``**``-aware glob as a regex over POSIX paths, the same on every Python."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")


def _is_under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p.rstrip(os.sep) or path.startswith(p) for p in prefixes)


@dataclasses.dataclass(frozen=True)
class WatchRules:
    """Which directories are watched and what a change under them means."""

    #: Directories watched with everything below them (minus the ignores).
    roots: tuple[Path, ...]
    #: Directories ignored with everything below them (MEDIA_ROOT, ...).
    ignored: tuple[Path, ...] = ()
    #: Extra globs whose matches restart, and globs whose matches are ignored.
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    #: ``(directory, glob)`` registered through ``watch_dir``: offered first.
    offered: tuple[tuple[Path, str], ...] = ()

    # Compiled once per rules object; cached_property writes to the instance
    # dict directly, which a frozen dataclass allows.
    @functools.cached_property
    def _include(self) -> tuple[re.Pattern[str], ...]:
        return tuple(_user_glob(g) for g in self.include)

    @functools.cached_property
    def _exclude(self) -> tuple[re.Pattern[str], ...]:
        return tuple(_user_glob(g) for g in self.exclude)

    @functools.cached_property
    def _offered(self) -> tuple[tuple[Path, re.Pattern[str]], ...]:
        return tuple((d, glob_to_regex(g)) for d, g in self.offered)

    @functools.cached_property
    def _ignored(self) -> tuple[str, ...]:
        ignored = tuple(os.path.join(str(p), "") for p in self.ignored)
        return ignored + system_prefixes()

    @functools.cached_property
    def _bases(self) -> tuple[Path, ...]:
        """Roots and offered directories, deepest first."""
        bases = {*self.roots, *(d for d, _ in self.offered)}
        return tuple(sorted(bases, key=lambda p: len(p.parts), reverse=True))

    def is_ignored_dir(self, path: Path) -> bool:
        if path.name in IGNORED_DIR_NAMES or _is_virtualenv(str(path)):
            return True
        return _is_under(str(path), self._ignored)

    def classify(self, path: str) -> Action:
        """What a change to ``path`` (absolute) asks for.

        Directory names are judged below the watched directory only, so a
        project may itself live in, say, ``~/venv/site``.
        """
        file = Path(path)
        if IGNORED_FILE_NAMES.search(file.name):
            return Action.IGNORE
        base = next((b for b in self._bases if b in file.parents), None)
        relative = file.relative_to(base) if base is not None else file
        for depth, part in enumerate(relative.parts[:-1], start=1):
            if part in IGNORED_DIR_NAMES:
                return Action.IGNORE
            if _is_virtualenv(
                str((base or Path(file.anchor)).joinpath(*relative.parts[:depth]))
            ):
                return Action.IGNORE
        if _is_under(path, self._ignored):
            return Action.IGNORE
        names = (relative.as_posix(), file.as_posix())
        if any(_matches(rx, names) for rx in self._exclude):
            return Action.IGNORE
        if file.suffix == ".py" or any(_matches(rx, names) for rx in self._include):
            return Action.RESTART
        for directory, rx in self._offered:
            if directory in file.parents and rx.match(
                file.relative_to(directory).as_posix()
            ):
                return Action.OFFER
        return Action.IGNORE

    def directories(self) -> list[Path]:
        """Every directory to watch: the roots and the offered directories,
        walked once without descending into ignored ones."""
        found: list[Path] = []
        seen: set[Path] = set()
        starts = [*self.roots, *(d for d, _ in self.offered)]
        for start in starts:
            # os.path: Path.is_dir() raises for a name too long (before 3.14).
            if not os.path.isdir(start) or self.is_ignored_dir(start):
                continue
            for current, dirnames, _ in os.walk(start):
                here = Path(current)
                if here in seen:
                    dirnames[:] = []
                    continue
                seen.add(here)
                found.append(here)
                dirnames[:] = sorted(
                    d for d in dirnames if not self.is_ignored_dir(here / d)
                )
        return found


def _user_glob(pattern: str) -> re.Pattern[str]:
    """An option glob, matched against the path below the watched directory
    (an absolute pattern against the absolute path); a bare name pattern
    matches in any directory."""
    if not pattern.startswith(("/", "**")):
        pattern = "**/" + pattern
    return glob_to_regex(pattern)


def _matches(rx: re.Pattern[str], names: tuple[str, str]) -> bool:
    relative, absolute = names
    return rx.match(absolute if rx.pattern.startswith("/") else relative) is not None


@functools.lru_cache(maxsize=4096)
def _is_virtualenv(directory: str) -> bool:
    """A virtualenv, whatever its name, has a pyvenv.cfg at its top."""
    return os.path.exists(os.path.join(directory, "pyvenv.cfg"))
