"""Alembic environment: ``libs.storage.migration_env`` (async, replicas take turns)."""

from libs.storage.migration_env import run_migrations

run_migrations("user_service")
