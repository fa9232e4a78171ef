"""Units: the watch rules, what is watched and what a change means."""

from __future__ import annotations

from pathlib import Path

import pytest

from runserver_plus.reloader.rules import Action, WatchRules, glob_to_regex
from tests.helpers import make_dirs

IGNORE = Action.IGNORE
RESTART = Action.RESTART
OFFER = Action.OFFER


# glob_to_regex: ``**`` the same on every Python (pathlib's full_match is 3.13+).


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        # Django's template loader watches its directories with "**/*": files at
        # the top of the directory are templates too (django-watchfiles missed
        # them on Python < 3.13).
        ("**/*", "page.html", True),
        ("**/*", "testapp/page.html", True),
        ("**/*", "a/b/c/page.html", True),
        ("**/*.mo", "django.mo", True),
        ("**/*.mo", "fr/LC_MESSAGES/django.mo", True),
        ("**/*.mo", "fr/LC_MESSAGES/django.po", False),
        ("**/*.mo", "django.mo.swp", False),
        # A single star or question mark never crosses a directory.
        ("*.html", "page.html", True),
        ("*.html", "testapp/page.html", False),
        ("?.py", "a.py", True),
        ("?.py", "ab.py", False),
        ("a?b", "a/b", False),
        ("config/*.toml", "config/a.toml", True),
        ("config/*.toml", "config/sub/a.toml", False),
        ("config/**/*.toml", "config/a.toml", True),
        ("config/**/*.toml", "config/sub/deeper/a.toml", True),
        ("config/**/*.toml", "other/a.toml", False),
        ("config/**", "config/sub/a.toml", True),
        ("**", "anything/at/all", True),
        # Everything else is literal, regex characters included.
        ("a+b.txt", "a+b.txt", True),
        ("a+b.txt", "aab.txt", False),
        ("*.txt", "notes.txt.bak", False),
        ("(x)[1].py", "(x)[1].py", True),
    ],
)
def test_glob_to_regex(pattern: str, path: str, matches: bool) -> None:
    assert (glob_to_regex(pattern).match(path) is not None) is matches


# WatchRules.classify: what a change asks of the supervisor.


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project tree with a template directory and a virtualenv of a custom name."""
    root = tmp_path / "project"
    (root / "testapp" / "templates" / "testapp").mkdir(parents=True)
    (root / "locale" / "fr" / "LC_MESSAGES").mkdir(parents=True)
    (root / "myenv" / "lib").mkdir(parents=True)
    (root / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return root


def django_rules(root: Path, **options: tuple[str, ...]) -> WatchRules:
    """Rules as the supervisor builds them for the test project under ``root``."""
    return WatchRules(
        roots=(root,),
        ignored=(root / "media", root / "staticroot", root / "db.sqlite3"),
        # What Django's template and translation reloaders ask through watch_dir.
        offered=(
            (root / "templates", "**/*"),
            (root / "testapp" / "templates", "**/*"),
            (root / "locale", "**/*.mo"),
        ),
        **options,
    )


@pytest.mark.parametrize(
    ("relative", "action"),
    [
        # Python code restarts, wherever it is in the project.
        ("manage.py", RESTART),
        ("testapp/views.py", RESTART),
        ("testproject/settings.py", RESTART),
        ("testapp/migrations/0002_note_extra.py", RESTART),
        # Watched non-Python files are offered to the worker first.
        ("templates/base.html", OFFER),
        ("testapp/templates/testapp/page.html", OFFER),
        ("testapp/templates/page.txt", OFFER),
        ("locale/fr/LC_MESSAGES/django.mo", OFFER),
        # Anything else is nobody's business.
        ("locale/fr/LC_MESSAGES/django.po", IGNORE),
        ("static/css/site.css", IGNORE),
        ("README.rst", IGNORE),
        ("testapp/page.html", IGNORE),
        # VCS, caches, dependencies and virtualenvs.
        (".git/hooks/pre-commit.py", IGNORE),
        (".hg/x.py", IGNORE),
        ("testapp/__pycache__/views.py", IGNORE),
        ("testapp/__pycache__/views.cpython-312.pyc", IGNORE),
        ("node_modules/pkg/build.py", IGNORE),
        ("frontend/node_modules/pkg/lib/deep/x.py", IGNORE),
        ("venv/lib/python3.12/site-packages/django/views.py", IGNORE),
        (".venv/bin/activate_this.py", IGNORE),
        (".tox/py312/lib/x.py", IGNORE),
        # MEDIA_ROOT, STATIC_ROOT and the SQLite database.
        ("media/uploads/script.py", IGNORE),
        ("media/report.html", IGNORE),
        ("staticroot/admin/js/x.py", IGNORE),
        ("db.sqlite3", IGNORE),
        ("db.sqlite3-journal", IGNORE),
        ("testapp/data.db", IGNORE),
        ("testapp/data.sqlite-wal", IGNORE),
        ("templates/cache.sqlite3-shm", IGNORE),
        # Editor swap, backup and lock files, even inside offered directories.
        ("testapp/.views.py.swp", IGNORE),
        ("testapp/.views.py.swo", IGNORE),
        ("testapp/views.py~", IGNORE),
        ("testapp/.#views.py", IGNORE),
        ("testapp/#views.py#", IGNORE),
        ("testapp/4913", IGNORE),
        ("testapp/views.py___jb_tmp___", IGNORE),
        ("testapp/flycheck_views.py", IGNORE),
        ("templates/.base.html.swp", IGNORE),
        ("templates/base.html~", IGNORE),
        ("templates/4913", IGNORE),
        ("templates/.DS_Store", IGNORE),
    ],
)
def test_classify(project: Path, relative: str, action: Action) -> None:
    rules = django_rules(project)

    assert rules.classify(str(project / relative)) is action


def test_classify_ignores_a_virtualenv_found_by_its_pyvenv_cfg(project: Path) -> None:
    # "myenv" is no name the rules know: only its pyvenv.cfg says what it is.
    rules = django_rules(project)

    assert rules.is_ignored_dir(project / "myenv")
    assert rules.classify(str(project / "myenv" / "lib" / "activate_this.py")) is IGNORE


@pytest.mark.parametrize(
    ("options", "relative", "action"),
    [
        # A bare name pattern matches in any directory.
        ({"include": ("*.env",)}, ".env", RESTART),
        ({"include": ("*.env",)}, "config/prod.env", RESTART),
        ({"include": ("*.toml",)}, "pyproject.toml", RESTART),
        ({"include": ("*.toml",)}, "pyproject.cfg", IGNORE),
        # A pattern with a directory part.
        ({"include": ("config/**/*.toml",)}, "config/app.toml", RESTART),
        ({"include": ("config/**/*.toml",)}, "config/sub/app.toml", RESTART),
        ({"include": ("config/**/*.toml",)}, "other/app.toml", IGNORE),
        # Include beats the offer: a matching template restarts.
        ({"include": ("*.html",)}, "templates/base.html", RESTART),
        # Exclude beats everything, .py files included.
        ({"exclude": ("*_local.py",)}, "testproject/settings_local.py", IGNORE),
        ({"exclude": ("*_local.py",)}, "testproject/settings.py", RESTART),
        ({"exclude": ("testapp/generated/*",)}, "testapp/generated/api.py", IGNORE),
        ({"exclude": ("testapp/generated/*",)}, "testapp/views.py", RESTART),
        ({"exclude": ("**/*.html",)}, "templates/base.html", IGNORE),
        ({"exclude": ("*.env",), "include": ("*.env",)}, ".env", IGNORE),
        # The default ignores stay when the user adds globs.
        ({"include": ("*.toml",)}, "node_modules/pkg/app.toml", IGNORE),
    ],
)
def test_classify_with_include_and_exclude_globs(
    project: Path, options: dict[str, tuple[str, ...]], relative: str, action: Action
) -> None:
    rules = django_rules(project, **options)

    assert rules.classify(str(project / relative)) is action


def test_option_globs_do_not_match_the_directories_above_the_project(
    tmp_path: Path,
) -> None:
    # The project happens to live in a directory called "docs": excluding the
    # project's docs/ must not exclude the whole project.
    root = tmp_path / "docs" / "site"
    rules = WatchRules(roots=(root,), exclude=("docs/**",))

    assert rules.classify(str(root / "docs" / "conf.py")) is IGNORE
    assert rules.classify(str(root / "app" / "views.py")) is RESTART


def test_the_project_may_live_inside_a_directory_with_an_ignored_name(
    tmp_path: Path,
) -> None:
    # Old tutorials put the project inside its virtualenv: ~/venv/mysite.
    venv = tmp_path / "venv"
    root = venv / "mysite"
    make_dirs(root, "mysite")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    rules = WatchRules(roots=(root,))

    assert rules.directories() == [root, root / "mysite"]
    assert rules.classify(str(root / "mysite" / "views.py")) is RESTART


def test_offered_directory_outside_the_roots(tmp_path: Path) -> None:
    outside = tmp_path / "shared-templates"
    rules = WatchRules(roots=(tmp_path / "project",), offered=((outside, "*.html"),))

    assert rules.classify(str(outside / "base.html")) is OFFER
    assert rules.classify(str(outside / "sub" / "base.html")) is IGNORE
    assert rules.classify(str(outside / "base.txt")) is IGNORE


# WatchRules.directories: one walk that never enters an ignored tree.


def test_directories_skip_ignored_trees(project: Path, tmp_path: Path) -> None:
    make_dirs(
        project,
        "node_modules/pkg/lib/deep/deeper",
        "frontend/node_modules/other/dist",
        ".git/objects/ab",
        "testapp/__pycache__",
        "venv/lib/python3.12/site-packages/django",
        "myenv/lib/python3.12/site-packages/django",
        "media/uploads/2024",
        "staticroot/admin/js",
        "testapp/migrations",
        "static/css",
    )
    rules = django_rules(project)

    found = rules.directories()

    assert len(found) == len(set(found))
    relative = {p.relative_to(project).as_posix() for p in found}
    assert relative == {
        ".",
        "frontend",
        "locale",
        "locale/fr",
        "locale/fr/LC_MESSAGES",
        "static",
        "static/css",
        "testapp",
        "testapp/migrations",
        "testapp/templates",
        "testapp/templates/testapp",
    }
    assert not any("node_modules" in p.parts for p in found)


def test_directories_include_offered_directories_outside_the_roots(
    tmp_path: Path,
) -> None:
    root = tmp_path / "project"
    outside = tmp_path / "shared"
    make_dirs(root, "app")
    make_dirs(outside, "partials", "node_modules/x")
    rules = WatchRules(roots=(root,), offered=((outside, "**/*.html"),))

    found = set(rules.directories())

    assert found == {root, root / "app", outside, outside / "partials"}


def test_directories_skip_a_root_that_is_ignored_or_missing(tmp_path: Path) -> None:
    make_dirs(tmp_path, "project/app", "project/media/x")
    root = tmp_path / "project"
    rules = WatchRules(
        roots=(root, root / "media", tmp_path / "missing"), ignored=(root / "media",)
    )

    assert set(rules.directories()) == {root, root / "app"}
