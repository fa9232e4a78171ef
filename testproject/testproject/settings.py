"""Settings of the test project used by runserver_plus's tests and benchmarks.

Environment variables:

* ``TESTPROJECT_DEBUG``: ``"1"`` (default) for DEBUG on, ``"0"`` for off.
* ``TESTPROJECT_ALLOWED_HOSTS``: comma-separated ``ALLOWED_HOSTS`` (default empty).
* ``TESTPROJECT_DJANGO_RUNSERVER``: ``"1"`` leaves runserver_plus out of
  ``INSTALLED_APPS`` so Django's own ``runserver`` serves the same project.
* ``TESTPROJECT_DRAIN_TIMEOUT``: ``RUNSERVER_PLUS_DRAIN_TIMEOUT`` in seconds
  (runserver_plus's default when unset).
* ``TESTPROJECT_GATE_DIR``: the directory ``/gate/<name>/`` waits in (see
  ``testapp.views.gate``); the view answers 404 when unset.
* ``TESTPROJECT_ASGI``: ``"1"`` sets ``ASGI_APPLICATION``, so ``runserver``
  serves ``testproject/asgi.py`` (with Channels' WebSocket routes, when installed).
* ``TESTPROJECT_DAPHNE``: ``"1"`` adds Daphne to ``INSTALLED_APPS``, above
  runserver_plus, so Daphne's ``runserver`` serves (for the benchmarks).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# A fixed key: this project only ever runs on a developer's machine or in CI.
SECRET_KEY = "django-insecure-runserver-plus-testproject-not-a-secret"

DEBUG = os.environ.get("TESTPROJECT_DEBUG", "1") != "0"

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("TESTPROJECT_ALLOWED_HOSTS", "").split(",")
    if host.strip()
]

USE_DJANGO_RUNSERVER = os.environ.get("TESTPROJECT_DJANGO_RUNSERVER") == "1"

if "TESTPROJECT_DRAIN_TIMEOUT" in os.environ:
    RUNSERVER_PLUS_DRAIN_TIMEOUT = float(os.environ["TESTPROJECT_DRAIN_TIMEOUT"])

INSTALLED_APPS = [
    *(["daphne"] if os.environ.get("TESTPROJECT_DAPHNE") == "1" else []),
    # Above django.contrib.staticfiles: the first app listed supplies runserver.
    *([] if USE_DJANGO_RUNSERVER else ["runserver_plus"]),
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "testapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "testproject.wsgi.application"
if os.environ.get("TESTPROJECT_ASGI") == "1":
    ASGI_APPLICATION = "testproject.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOCALE_PATHS = [BASE_DIR / "locale"]

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticroot"

MEDIA_URL = "/media/"
MEDIA_ROOT = BASE_DIR / "media"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
