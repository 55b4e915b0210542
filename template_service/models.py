"""Tables: one row per (code, language) in ``templates``, one row per version in
``template_versions``.

``templates.active_version`` names the active version, so exactly one is active by construction.
A deleted template keeps its rows (``deleted_at`` set); the unique index on (code, language) covers
live rows only, so the pair can be created again later. Migrations in ``migrations/versions`` are
written by hand and must match these models (a test compares them).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Template(SQLModel, table=True):
    __tablename__ = "templates"
    __table_args__ = (
        sa.Index(
            "uq_templates_code_language_live",
            "code",
            "language",
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
        sa.CheckConstraint("type IN ('email', 'push')", name="ck_templates_type"),
        sa.CheckConstraint("active_version >= 1", name="ck_templates_active_version"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    code: str = Field(max_length=100, index=True)
    language: str = Field(max_length=35)
    type: str = Field(max_length=10)
    # The active version's name, copied here so that lists need no join to show it.
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    active_version: int
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=sa.DateTime(timezone=True), nullable=False
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_type=sa.DateTime(timezone=True), nullable=False
    )
    deleted_at: datetime | None = Field(
        default=None, sa_type=sa.DateTime(timezone=True), nullable=True
    )


class TemplateVersion(SQLModel, table=True):
    __tablename__ = "template_versions"
    __table_args__ = (
        sa.UniqueConstraint("template_id", "version", name="uq_template_versions_version"),
        sa.CheckConstraint("version >= 1", name="ck_template_versions_version"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    template_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("templates.id", ondelete="CASCADE"), nullable=False
        )
    )
    version: int
    name: str = Field(max_length=200)
    subject: str | None = Field(default=None, sa_type=sa.Text())
    content: str = Field(sa_type=sa.Text())
    text: str | None = Field(default=None, sa_type=sa.Text())
    title: str | None = Field(default=None, sa_type=sa.Text())
    image: str | None = Field(default=None, sa_type=sa.Text())
    link: str | None = Field(default=None, sa_type=sa.Text())
    change_note: str | None = Field(default=None, max_length=500)
    created_by: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=sa.DateTime(timezone=True), nullable=False
    )
