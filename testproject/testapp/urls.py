"""URLs of testapp's views."""

from __future__ import annotations

from django.urls import path

from testapp import async_views, views

urlpatterns = [
    path("", views.index, name="index"),
    path("hello/", views.hello, name="hello"),
    path("echo/", views.echo, name="echo"),
    path("slow/", views.slow, name="slow"),
    path("gate/<slug:name>/", views.gate, name="gate"),
    path("stream/", views.stream, name="stream"),
    path("sync/events/", views.sync_events, name="sync-events"),
    path("boom/", views.boom, name="boom"),
    path("large/", views.large, name="large"),
    path("page/", views.page, name="page"),
    path("pid/", views.pid, name="pid"),
    path("upload/", views.upload, name="upload"),
    path("queries/", views.queries, name="queries"),
    path("async/hello/", async_views.hello, name="async-hello"),
    path("async/sleep/", async_views.sleep, name="async-sleep"),
    path("async/events/", async_views.events, name="async-events"),
]
