"""Which modules a warm process may import, and how it is started: pure rules."""

from __future__ import annotations

import os
import site
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType

#: Module names never preloaded: the entry points of a process, which the
#: warm process runs itself when it becomes the worker.
NEVER_PRELOADED = frozenset({"__main__", "__mp_main__"})

#: How far a whole-second time stamp may lag the change it records.
COARSE_TIMESTAMPS = 2_000_000_000  # ns
#: Files whose change makes a warm process prepared before stale: lock files
#: (installed packages changed), and the environment files that settings
#: modules read (the warm process has loaded the settings).
LOCK_FILE_GLOBS = (
    "requirements*.txt",
    "poetry.lock",
    "uv.lock",
    "Pipfile.lock",
    ".env",
    ".env.*",
)


def system_prefixes() -> tuple[str, ...]:
    """The standard library and site-packages directories, each ending in a
    separator: code there is never the project's, even in a virtualenv that
    lives inside the project directory."""
    paths = {
        sysconfig.get_paths()[key]
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    if site.ENABLE_USER_SITE and site.USER_SITE:
        paths.add(site.USER_SITE)
    return tuple(os.path.join(os.path.realpath(p), "") for p in paths if p)


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path.startswith(p) for p in prefixes)


def is_project_path(path: str, roots: Sequence[str], system: Sequence[str]) -> bool:
    """Whether ``path`` is the project's own code: below one of its ``roots``
    (each ending in a separator) and not in the standard library or
    site-packages."""
    real = os.path.realpath(path)
    return _under(real, roots) and not _under(real, system)


def module_paths(module: ModuleType) -> list[str]:
    """Where a module's code lives: its file, or a namespace package's folders."""
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        return [file]
    search = getattr(module, "__path__", None)
    try:
        return [p for p in search or () if isinstance(p, str)]
    except TypeError:  # an unusual __path__ object that is not iterable
        return []


def preloadable(
    modules: Mapping[str, ModuleType | None],
    roots: Sequence[str],
    *,
    settings_module: str = "",
    system: Sequence[str] | None = None,
) -> list[str]:
    """The names in ``modules`` (``sys.modules``, in import order) that a warm
    process may import: everything from outside the project.

    Left out: the project's own modules (below ``roots``, the project and
    watched directories, unless in site-packages), the settings module and
    the packages above it, and the entry points. Whether a module imports
    safely ahead of ``django.setup()`` is not decided here: the warm process
    tries each and drops those that fail (see ``warm.Preloader``).
    """
    prefixes = [os.path.join(os.path.realpath(r), "") for r in roots if r]
    system = system_prefixes() if system is None else system
    settings_parts = settings_module.split(".") if settings_module else []
    settings_names = {
        ".".join(settings_parts[:i]) for i in range(1, len(settings_parts) + 1)
    }
    names = []
    for name, module in list(modules.items()):
        if module is None or name in NEVER_PRELOADED or name in settings_names:
            continue
        if any(is_project_path(p, prefixes, system) for p in module_paths(module)):
            continue
        names.append(name)
    return names


def warm_command(
    child_arguments: Sequence[str], cwd: str, bootstrap: str
) -> list[str] | None:
    """The command line of a warm process for a worker started as
    ``child_arguments`` (Django's ``autoreload.get_child_arguments()``), or
    None when that command cannot be run from a warm process.

    The warm process runs ``bootstrap`` with ``-c``, the same interpreter and
    ``-W``/``-X`` options, then the first entry of ``sys.path`` the worker
    would have had, then the worker's own arguments: a script and its
    arguments, or ``-m``, a module and its arguments.
    """
    if not child_arguments:
        return None
    interpreter, *rest = child_arguments
    options: list[str] = []
    while rest and rest[0][:2] in ("-W", "-X") and len(rest[0]) > 2:
        options.append(rest.pop(0))
    if len(rest) >= 2 and rest[0] == "-m":
        first_path = cwd  # what ``python -m`` puts first on sys.path
    elif (
        rest
        and not rest[0].startswith("-")
        and os.path.isfile(os.path.join(cwd, rest[0]))
    ):
        if rest[0].lower().endswith(".exe"):
            return None  # a Windows launcher, not Python source
        # What ``python script`` puts first on sys.path: the script's real folder.
        first_path = os.path.dirname(os.path.realpath(os.path.join(cwd, rest[0])))
    else:
        return None
    return [interpreter, *options, "-c", bootstrap, first_path, *rest]


def lock_files(directories: Iterable[str]) -> list[str]:
    """The dependency lock files in ``directories``."""
    import glob  # noqa: PLC0415 - only the warm process looks for them

    found: list[str] = []
    for directory in directories:
        for pattern in LOCK_FILE_GLOBS:
            found.extend(glob.glob(os.path.join(glob.escape(directory), pattern)))
    return sorted(set(found))


def changed_since(paths: Iterable[str], since_ns: int) -> str | None:
    """The first of ``paths`` that changed (content or inode: the ctime moves
    for both, and no tool sets it back) or vanished at or after ``since_ns``;
    None when none did."""
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return path
        changed = max(st.st_ctime_ns, st.st_mtime_ns)
        # A file system that keeps whole seconds (or two) rounds a change
        # just after ``since_ns`` down to before it.
        coarse = changed % 1_000_000_000 == 0
        if changed >= since_ns - (COARSE_TIMESTAMPS if coarse else 0):
            return path
    return None
