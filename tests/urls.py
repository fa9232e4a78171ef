"""An empty URLconf for the test suite."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
