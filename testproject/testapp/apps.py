"""The application configuration of testapp."""

from __future__ import annotations

from django.apps import AppConfig


class TestappConfig(AppConfig):
    name = "testapp"
    verbose_name = "Test app"
