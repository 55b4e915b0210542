"""Alembic environment: ``libs.storage.migration_env`` (async, replicas take turns)."""

from gateway.history import metadata
from libs.storage.migration_env import run_migrations

run_migrations("gateway", metadata)
