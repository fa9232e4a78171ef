"""The ASGI entry point of the test project: Django for HTTP, Channels (when
installed) for WebSockets."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

# Built first: it sets Django up, which the routing's imports need.
django_application = get_asgi_application()

try:
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
except ImportError:  # Channels is optional: HTTP only
    application = django_application
else:
    from testapp.routing import websocket_urlpatterns

    application = ProtocolTypeRouter(
        {
            "http": django_application,
            "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
        }
    )
