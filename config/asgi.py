"""ASGI entry point: daphne serves HTTP (Django) and WebSocket (Channels) from one process."""

import os

import django
from daphne.http_protocol import WebRequest

_web_request_init = WebRequest.__init__


def _web_request_without_form_parsing(self: WebRequest, *args: object, **kwargs: object) -> None:
    """Twisted parses every POSTed multipart body into `request.args` before daphne sees it: a second copy of each
    upload in memory that daphne never reads (the ASGI app parses the body itself), and a malformed body gets a bare
    400 with no headers and no error body, which no client can read. Django parses the body; Twisted need not."""
    kwargs.setdefault("parsePOSTFormSubmission", False)
    _web_request_init(self, *args, **kwargs)


WebRequest.__init__ = _web_request_without_form_parsing  # type: ignore[method-assign]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
# Web processes use the connection pool (see DATABASES in config/settings/base.py) unless DB_POOL says otherwise.
_pool_by_default = "DB_POOL" not in os.environ
os.environ.setdefault("DB_POOL", "true")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application() does, with our handler

from core.asgi import OneHopASGIHandler  # noqa: E402

django_asgi_app = OneHopASGIHandler()
if _pool_by_default:
    del os.environ["DB_POOL"]  # read once by the settings; processes this one starts keep their own default

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from config.warmup import startup_objects_freeze, web_warm_up_start  # noqa: E402
from config.ws_urls import websocket_urlpatterns  # noqa: E402
from core.admission import AdmissionMiddleware  # noqa: E402
from iam.origin import SameHostOriginValidator  # noqa: E402
from iam.ws_session import LazySessionUserMiddleware  # noqa: E402
from tenants.middleware import TenantWebsocketMiddleware  # noqa: E402

application = AdmissionMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # Tenant first: sessions and users resolve after the schema is known (#911).
            # A browser's Origin must be the socket's own host (iam.origin), not any *.BASE_DOMAIN.
            "websocket": SameHostOriginValidator(
                TenantWebsocketMiddleware(
                    SessionMiddlewareStack(LazySessionUserMiddleware(URLRouter(websocket_urlpatterns)))
                )
            ),
        }
    )
)

# Load the query embedder now, not in the first search; /readyz reports not ready until it is (config.warmup).
web_warm_up_start()
startup_objects_freeze()  # what the process loaded to serve stays out of every full collection (config.warmup)
