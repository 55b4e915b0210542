"""python -m gateway: serve the public REST API."""

from gateway.config import GatewaySettings
from libs.http.serve import main, serve

if __name__ == "__main__":
    main({"serve": lambda: serve("gateway.app:create_app", GatewaySettings())})
