"""The floor of a warm restart: the work left after a save, timed alone.

Before a save, runserver_plus's warm process may import only what needs no
app registry and nothing of the project (issue #11). Whatever else a worker
does before it serves must happen after the save, in any warm design: the
settings executed afresh, ``django.setup()`` (the project's models and the
installed apps' own), the system checks with the URLconf, the migration
check and the WSGI handler. This script times exactly that, in one process
that imported everything else first, with no supervisor, no hand-over and
no HTTP. Its ratio to Django's restart bounds what any warm restart can
reach on the project.

Run by reload.py as a subprocess, in the project's directory and with the
project's ``DJANGO_SETTINGS_MODULE``:

- ``python reload_floor.py list FILE`` starts as a worker does and writes
  the names of the modules it loaded from outside the project, in order
  (``preload.preloadable``, as the supervisor chooses them);
- ``python reload_floor.py measure FILE`` imports those, best effort, as the
  warm process does (a failed import is undone), then forgets the settings
  and prints ``{"seconds": ..., "preloaded": ...}`` for the rest.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

from runserver_plus import _compat
from runserver_plus.reloader import procstate
from runserver_plus.reloader.preload import (
    is_project_path,
    module_paths,
    preloadable,
    system_prefixes,
)
from runserver_plus.reloader.warm import forget


def start() -> None:
    """What a runserver worker does before it serves, minus the imports."""
    import django
    from django.core import checks
    from django.core.management import get_commands
    from django.core.wsgi import get_wsgi_application
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    django.setup()
    get_commands()  # manage.py looks for the command in every app
    checks.run_checks()  # imports the URLconf (check_url_config)
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    executor.migration_plan(executor.loader.graph.leaf_nodes())
    connections.close_all()
    get_wsgi_application()


def preload(names: list[str], project: str) -> int:
    """Import ``names``, best effort, then forget the project's modules (the
    settings, which libraries load at import) and Django's settings, as the
    warm process does on its go."""
    for name in names:
        if name in sys.modules:
            continue
        before = set(sys.modules)
        try:
            importlib.import_module(name)
        except Exception:  # needs the app registry, or fails anyway: undone
            forget(set(sys.modules) - before)
    roots, system = [os.path.join(project, "")], system_prefixes()
    forget(
        {
            name
            for name, module in list(sys.modules.items())
            if any(is_project_path(p, roots, system) for p in module_paths(module))
        }
    )
    _compat.reset_settings()
    return len(sys.modules)


def main(mode: str, listing: Path) -> None:
    project = os.getcwd()
    sys.path[0] = project  # as manage.py's directory is, for a worker
    if mode == "list":
        start()
        settings_module = os.environ["DJANGO_SETTINGS_MODULE"]
        names = preloadable(sys.modules, [project], settings_module=settings_module)
        listing.write_text(json.dumps(names))  # what a supervisor would send
        return
    preloaded = preload(json.loads(listing.read_text()), project)
    procstate.freeze()  # as runserver_plus's worker starts
    started = time.perf_counter()
    start()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "preloaded": preloaded}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
