from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "klong_site.settings")
# Under ASGI each request runs its sync code in a thread of its own: a persistent connection would
# be left open per request until PostgreSQL refuses new clients (seen at 20 users in
# bench/bench_load.py), and a new connection per request costs a PostgreSQL backend each time. The
# web server borrows connections from a pool instead (settings.py); workers keep their own.
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
os.environ.setdefault("DB_POOL_SIZE", "16")
# Set up Django (apps, models) before anything imports a consumer.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from apps.jobs.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
