"""Alembic environment: ``libs.storage.migration_env`` (async, replicas take turns)."""

from sqlmodel import SQLModel

import dlq_service.models  # noqa: F401 - registers the tables on SQLModel.metadata
from libs.storage.migration_env import run_migrations

run_migrations("dlq_service", SQLModel.metadata)
