"""Django settings for the test suite."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent

SECRET_KEY = "runserver-plus-tests"
DEBUG = True
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = [
    "runserver_plus",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",
]
STATIC_URL = "/static/"
STATICFILES_DIRS = [TESTS_DIR / "static_fixtures"]
ROOT_URLCONF = "tests.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        # A file, not Django's default in-memory test database: connections to
        # an in-memory database cannot be closed, and one left open by a test
        # that ran the migration check would trip later tests' request signals.
        "TEST": {
            "NAME": os.path.join(
                tempfile.gettempdir(), f"rsp-tests-{os.getpid()}.sqlite3"
            )
        },
    },
    # A second database, for what --print-sql shows when there are several.
    "other": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "TEST": {
            "NAME": os.path.join(
                tempfile.gettempdir(), f"rsp-tests-{os.getpid()}-other.sqlite3"
            )
        },
    },
}
USE_TZ = True
