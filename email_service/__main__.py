"""python -m email_service: consume email.queue and serve health, readiness and metrics."""

from email_service.config import EmailSettings
from libs.http.serve import main, serve

if __name__ == "__main__":
    main({"serve": lambda: serve("email_service.app:create_app", EmailSettings())})
