"""The testproject copies of the reload benchmark: bench view, large tree, saves."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from .servers import copy_testproject, migrate

NODE_PACKAGES = 2000  # node_modules/pkgNNNN/lib/: one leaf directory each
NODE_FILES_PER_PACKAGE = 10  # 20,000 .js files
UNUSED_PACKAGES = 10  # unused/subNN/modNN/: 10 x 10 leaf packages
UNUSED_SUBPACKAGES = 10
UNUSED_MODULES = 20  # per leaf package: 2,000 unimported .py files

VERSION_LINE = re.compile(r'^BENCH_VERSION = ".*"$', re.MULTILINE)
MARKER = re.compile(r"bench-mark-[\w-]+")

BENCH_VIEW = '''

BENCH_VERSION = "v0"


def bench_version(request: HttpRequest) -> HttpResponse:
    """Added by benchmarks/reload.py: the version its edits change, and the pid."""
    return HttpResponse(f"{BENCH_VERSION} {os.getpid()}", content_type="text/plain")


def bench_modules(request: HttpRequest) -> JsonResponse:
    """Added by benchmarks/reload.py: the modules the serving process imported."""
    import sys

    return JsonResponse({"modules": len(sys.modules), "pid": os.getpid()})
'''

WATCHFILES_SETTINGS = '''"""testproject's settings plus django-watchfiles."""

from testproject.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django_watchfiles"]  # noqa: F405
'''


def prepare_project(workdir: Path) -> Path:
    """A migrated testproject copy with the benchmark's views, the template
    marker and a settings module that adds django-watchfiles."""
    project = copy_testproject(workdir / "prepared")
    views = project / "testapp" / "views.py"
    views.write_text(views.read_text() + BENCH_VIEW)
    urls = project / "testapp" / "urls.py"
    text = urls.read_text()
    anchor = "urlpatterns = [\n"
    assert anchor in text, "testapp/urls.py changed shape"
    urls.write_text(
        text.replace(
            anchor,
            anchor
            + '    path("bench-version/", views.bench_version, name="bench"),\n'
            + '    path("bench-modules/", views.bench_modules),\n',
        )
    )
    page = project / "testapp" / "templates" / "testapp" / "page.html"
    text = page.read_text()
    anchor = '<div id="content">\n'
    assert anchor in text, "page.html changed shape"
    page.write_text(text.replace(anchor, anchor + '  <p id="bench">bench-mark-0</p>\n'))
    (project / "bench_watchfiles_settings.py").write_text(WATCHFILES_SETTINGS)
    migrate(project)
    return project


def clone(prepared: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    project = destination / "testproject"
    shutil.copytree(
        prepared, project, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return project


def add_large_tree(project: Path) -> dict[str, int]:
    """node_modules/ with 20,000 .js files in 2,000 leaf directories, and a
    package unused/ of 2,000 .py files nothing imports, in 111 directories."""
    files = dirs = 0
    for package in range(NODE_PACKAGES):
        lib = project / "node_modules" / f"pkg{package:04d}" / "lib"
        lib.mkdir(parents=True)
        dirs += 2
        for number in range(NODE_FILES_PER_PACKAGE):
            (lib / f"file{number:03d}.js").write_text(
                f"module.exports = {{ pkg: {package}, file: {number} }};\n"
            )
            files += 1
    unused = project / "unused"
    unused.mkdir()
    (unused / "__init__.py").write_text("")
    py_files = 0
    py_dirs = 1
    for sub in range(UNUSED_PACKAGES):
        sub_dir = unused / f"sub{sub:02d}"
        sub_dir.mkdir()
        (sub_dir / "__init__.py").write_text("")
        py_dirs += 1
        for leaf in range(UNUSED_SUBPACKAGES):
            leaf_dir = sub_dir / f"mod{leaf:02d}"
            leaf_dir.mkdir()
            (leaf_dir / "__init__.py").write_text("")
            py_dirs += 1
            for module in range(UNUSED_MODULES):
                value = sub * 10000 + leaf * 100 + module
                (leaf_dir / f"m{module:02d}.py").write_text(
                    f"def f{module}() -> int:\n    return {value}\n"
                )
                py_files += 1
    return {
        "node_modules_files": files,
        "node_modules_dirs": dirs + 1,
        "unused_py_files": py_files,
        "unused_dirs": py_dirs,
    }


def write_source(path: Path, text: str) -> tuple[float, bool]:
    """Save ``text`` in place as an editor would; returns (the perf_counter()
    time the save completed, whether the mtime had to be bumped).

    Django's StatReloader reacts only to an mtime greater than the one it saw,
    so on a file system with coarse timestamps the mtime is moved on by 1 ms.
    """
    before = path.stat().st_mtime_ns
    with open(path, "w") as stream:
        stream.write(text)
    after = path.stat()
    bumped = after.st_mtime_ns <= before
    if bumped:
        os.utime(path, ns=(after.st_atime_ns, before + 1_000_000))
    return time.perf_counter(), bumped
