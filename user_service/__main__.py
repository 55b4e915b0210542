"""``python -m user_service [serve|migrate|seed|keys ...]``."""

from __future__ import annotations

from libs.http.serve import main, serve
from user_service.cli import run_keys, run_migrate, run_seed
from user_service.config import UserSettings


def run_serve() -> None:
    serve("user_service.app:create_app", UserSettings())


if __name__ == "__main__":
    main({"serve": run_serve, "migrate": run_migrate, "seed": run_seed, "keys": run_keys})
