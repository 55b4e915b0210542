"""Queries on templates and their versions. Never commits (the request or the caller does)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from libs.notification.message import Channel
from template_service.models import Template, TemplateVersion

# Larger offsets cannot match anything and would overflow PostgreSQL's bigint.
_MAX_OFFSET = 2**62

TemplateWithVersion = tuple[Template, TemplateVersion]

_ACTIVE_VERSION = and_(
    col(TemplateVersion.template_id) == col(Template.id),
    col(TemplateVersion.version) == col(Template.active_version),
)


class TemplateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_code(self, code: str) -> None:
        """Serialise changes to one code until the transaction ends (type checks, creation)."""
        lock = func.pg_advisory_xact_lock(func.hashtextextended(code, 0))
        await self.session.exec(select(lock))

    async def live_with_active_version(self, code: str) -> list[TemplateWithVersion]:
        """Every language of ``code`` with its active version, oldest language first."""
        statement = (
            select(Template, TemplateVersion)
            .join(TemplateVersion, _ACTIVE_VERSION)
            .where(Template.code == code, col(Template.deleted_at).is_(None))
            .order_by(col(Template.created_at), col(Template.id))
        )
        rows = await self.session.exec(statement)
        return [(template, version) for template, version in rows.all()]

    async def get_live(
        self, code: str, language: str, *, for_update: bool = False
    ) -> Template | None:
        statement = select(Template).where(
            Template.code == code,
            Template.language == language,
            col(Template.deleted_at).is_(None),
        )
        if for_update:
            statement = statement.with_for_update()
        return (await self.session.exec(statement)).first()

    async def get_version(self, template_id: uuid.UUID, version: int) -> TemplateVersion | None:
        statement = select(TemplateVersion).where(
            TemplateVersion.template_id == template_id, TemplateVersion.version == version
        )
        return (await self.session.exec(statement)).first()

    async def last_version_number(self, template_id: uuid.UUID) -> int:
        statement = select(func.max(TemplateVersion.version)).where(
            TemplateVersion.template_id == template_id
        )
        return int((await self.session.exec(statement)).one() or 0)

    async def list_versions(
        self, template_id: uuid.UUID, *, offset: int, limit: int
    ) -> tuple[Sequence[TemplateVersion], int]:
        """Newest version first."""
        where = TemplateVersion.template_id == template_id
        total = await self._count(select(func.count()).select_from(TemplateVersion).where(where))
        statement = (
            select(TemplateVersion)
            .where(where)
            .order_by(col(TemplateVersion.version).desc())
            .offset(min(offset, _MAX_OFFSET))
            .limit(limit)
        )
        return (await self.session.exec(statement)).all(), total

    async def list_active(
        self,
        *,
        type: Channel | None,
        language: str | None,
        code_contains: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[TemplateWithVersion], int]:
        """Live templates with their active versions, by code then language."""
        conditions: list[ColumnElement[bool]] = [col(Template.deleted_at).is_(None)]
        if type is not None:
            conditions.append(col(Template.type) == type.value)
        if language is not None:
            conditions.append(col(Template.language) == language)
        if code_contains:
            conditions.append(col(Template.code).icontains(code_contains, autoescape=True))
        total = await self._count(select(func.count()).select_from(Template).where(*conditions))
        statement = (
            select(Template, TemplateVersion)
            .join(TemplateVersion, _ACTIVE_VERSION)
            .where(*conditions)
            .order_by(col(Template.code), col(Template.language))
            .offset(min(offset, _MAX_OFFSET))
            .limit(limit)
        )
        rows = await self.session.exec(statement)
        return [(template, version) for template, version in rows.all()], total

    async def add(self, *rows: Template | TemplateVersion) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def _count(self, statement: SelectOfScalar[int]) -> int:
        return int((await self.session.exec(statement)).one())
