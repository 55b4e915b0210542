"""python -m push_service: consume push.queue and serve health, readiness and metrics."""

from libs.http.serve import main, serve
from push_service.config import PushSettings

if __name__ == "__main__":
    main({"serve": lambda: serve("push_service.app:create_app", PushSettings())})
