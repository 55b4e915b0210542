"""Alembic environment: ``libs.storage.migration_env`` (async, replicas take turns)."""

from __future__ import annotations

from sqlmodel import SQLModel

import template_service.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from libs.storage.migration_env import run_migrations

TABLES = frozenset({"templates", "template_versions"})


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # SQLModel.metadata is shared by every service imported in the same process.
    if type_ == "table":
        return name in TABLES
    return True


run_migrations("template_service", SQLModel.metadata, _include_object)
