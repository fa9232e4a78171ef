"""System checks: is our runserver command the one Django will run?"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.core.management import find_commands


def register() -> None:
    """Register the checks (called from ``AppConfig.ready``)."""
    checks.register(check_command_order)


def check_command_order(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Warn when an app listed above us ships ``runserver``: Django runs the
    command of the first app that has it, so ours would silently not be used."""
    for app_config in apps.get_app_configs():
        if app_config.name == "runserver_plus":
            return []
        if "runserver" in find_commands(os.path.join(app_config.path, "management")):
            return [
                checks.Warning(
                    f"runserver_plus is listed after {app_config.name!r} in "
                    "INSTALLED_APPS, so that app's runserver command is used "
                    "instead of runserver_plus's.",
                    hint=f"Move 'runserver_plus' above {app_config.name!r} in "
                    "INSTALLED_APPS.",
                    id="runserver_plus.W001",
                )
            ]
    return []
