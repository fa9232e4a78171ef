"""The Django application configuration of runserver_plus."""

from __future__ import annotations

from django.apps import AppConfig


class RunserverPlusConfig(AppConfig):
    name = "runserver_plus"
    verbose_name = "runserver_plus"

    def ready(self) -> None:
        # Registering the checks here, not at import, keeps imports free of
        # side effects.
        from runserver_plus import checks  # noqa: PLC0415

        checks.register()
