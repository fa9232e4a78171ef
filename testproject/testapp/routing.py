"""WebSocket routes of testapp, for Channels."""

from __future__ import annotations

from django.urls import path

from testapp.consumers import EchoConsumer

websocket_urlpatterns = [path("ws/echo/", EchoConsumer.as_asgi())]
