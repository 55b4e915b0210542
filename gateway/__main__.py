"""``python -m gateway [serve|migrate]``: the public REST API; its database's migrations."""

from gateway.config import MIGRATIONS_DIR, GatewaySettings
from libs.http.serve import main, serve
from libs.storage.db import upgrade

if __name__ == "__main__":
    main(
        {
            "serve": lambda: serve("gateway.app:create_app", GatewaySettings()),
            "migrate": lambda: upgrade(MIGRATIONS_DIR, GatewaySettings().database_url),
        }
    )
