"""``python -m gateway [serve|migrate]``: the public REST API; its database's migrations."""

from gateway.config import MIGRATIONS_DIR, GatewaySettings
from libs.http.serve import main, serve
from libs.storage.db import upgrade


def _serve(settings: GatewaySettings) -> None:
    serve("gateway.app:create_app", settings, workers=settings.workers)


if __name__ == "__main__":
    main(
        {
            "serve": lambda: _serve(GatewaySettings()),
            "migrate": lambda: upgrade(MIGRATIONS_DIR, GatewaySettings().database_url),
        }
    )
