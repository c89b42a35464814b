"""ASGI entry point: daphne serves HTTP (Django) and WebSocket (Channels) from one process."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
# Web processes use the connection pool (see DATABASES in config/settings/base.py) unless DB_POOL says otherwise.
_pool_by_default = "DB_POOL" not in os.environ
os.environ.setdefault("DB_POOL", "true")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application() does, with our handler

from core.asgi import OneHopASGIHandler  # noqa: E402

django_asgi_app = OneHopASGIHandler()
if _pool_by_default:
    del os.environ["DB_POOL"]  # read once by the settings; processes this one starts keep their own default

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.ws_urls import websocket_urlpatterns  # noqa: E402
from iam.origin import SameHostOriginValidator  # noqa: E402
from tenants.middleware import TenantWebsocketMiddleware  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Tenant first: sessions and users resolve after the schema is known (#911).
        # A browser's Origin must be the socket's own host (iam.origin), not any *.BASE_DOMAIN.
        "websocket": SameHostOriginValidator(
            TenantWebsocketMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
