"""runserver_plus: a drop-in replacement for Django's runserver command."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
