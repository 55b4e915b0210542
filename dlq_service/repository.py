"""Queries on ``failed_messages`` and ``failed_message_events``. Callers own the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from dlq_service.models import AuditAction, FailedMessage, FailedMessageEvent, FailedState


@dataclass(frozen=True)
class FailedFilter:
    """Which failed messages: every given field must match (``state`` None means any state)."""

    channel: str | None = None
    reason: str | None = None
    error: str | None = None  # case-insensitive substring of the last error
    since: datetime | None = None  # failed_at >= since
    until: datetime | None = None  # failed_at <= until
    state: FailedState | None = FailedState.PENDING
    notification_id: uuid.UUID | None = None
    provider: str | None = None
    user_id: str | None = None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(f: FailedFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.state is not None:
        conds.append(col(FailedMessage.state) == f.state.value)
    if f.channel is not None:
        conds.append(col(FailedMessage.channel) == f.channel)
    if f.reason is not None:
        conds.append(col(FailedMessage.reason) == f.reason)
    if f.error:
        conds.append(col(FailedMessage.error).ilike(f"%{_escape_like(f.error)}%", escape="\\"))
    if f.since is not None:
        conds.append(col(FailedMessage.failed_at) >= f.since)
    if f.until is not None:
        conds.append(col(FailedMessage.failed_at) <= f.until)
    if f.notification_id is not None:
        conds.append(col(FailedMessage.notification_id) == f.notification_id)
    if f.provider is not None:
        conds.append(col(FailedMessage.provider) == f.provider)
    if f.user_id is not None:
        conds.append(col(FailedMessage.user_id) == f.user_id)
    return conds


async def insert_if_new(session: AsyncSession, row: FailedMessage) -> bool:
    """Insert unless a row with the same fingerprint exists; True if this call inserted it."""
    values = row.model_dump()
    statement = (
        insert(FailedMessage)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["fingerprint"])
        .returning(col(FailedMessage.id))
    )
    result = await session.exec(statement)
    return result.scalar_one_or_none() is not None


def add_event(
    session: AsyncSession,
    failed_message_id: uuid.UUID,
    action: AuditAction,
    actor: str,
    at: datetime,
    reason: str | None = None,
) -> FailedMessageEvent:
    event = FailedMessageEvent(
        failed_message_id=failed_message_id,
        action=action.value,
        actor=actor,
        reason=reason,
        at=at,
    )
    session.add(event)
    return event


async def get(
    session: AsyncSession,
    failed_id: uuid.UUID,
    *,
    for_update: bool = False,
    skip_locked: bool = False,
) -> FailedMessage | None:
    statement = select(FailedMessage).where(col(FailedMessage.id) == failed_id)
    if for_update:
        statement = statement.with_for_update(skip_locked=skip_locked)
    result = await session.exec(statement)
    return result.one_or_none()


async def get_many(session: AsyncSession, ids: Sequence[uuid.UUID]) -> Sequence[FailedMessage]:
    statement = select(FailedMessage).where(col(FailedMessage.id).in_(list(ids)))
    return (await session.exec(statement)).all()


async def events(session: AsyncSession, failed_id: uuid.UUID) -> Sequence[FailedMessageEvent]:
    statement = (
        select(FailedMessageEvent)
        .where(col(FailedMessageEvent.failed_message_id) == failed_id)
        .order_by(col(FailedMessageEvent.at), col(FailedMessageEvent.id))
    )
    return (await session.exec(statement)).all()


async def search(
    session: AsyncSession, f: FailedFilter, *, offset: int, limit: int
) -> tuple[Sequence[FailedMessage], int]:
    """One page, newest failure first, and the total that matches."""
    conds = _conditions(f)
    total_statement = select(func.count()).select_from(FailedMessage).where(*conds)
    total = (await session.exec(total_statement)).one()
    statement = (
        select(FailedMessage)
        .where(*conds)
        .order_by(col(FailedMessage.failed_at).desc(), col(FailedMessage.id).desc())
        .offset(offset)
        .limit(limit)
    )
    rows = (await session.exec(statement)).all()
    return rows, int(total)


def _republishable(f: FailedFilter, ids: Sequence[uuid.UUID] | None) -> list[ColumnElement[bool]]:
    conds = _conditions(f)
    conds.append(col(FailedMessage.republishable).is_(True))
    if ids is not None:
        conds.append(col(FailedMessage.id).in_(list(ids)))
    return conds


async def republish_candidates(
    session: AsyncSession,
    f: FailedFilter,
    ids: Sequence[uuid.UUID] | None,
    limit: int,
) -> list[uuid.UUID]:
    """Ids of republishable messages matching the filter, oldest failure first."""
    statement = (
        select(FailedMessage.id)
        .where(*_republishable(f, ids))
        .order_by(col(FailedMessage.failed_at), col(FailedMessage.id))
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def count_republishable(
    session: AsyncSession, f: FailedFilter, ids: Sequence[uuid.UUID] | None
) -> int:
    statement = select(func.count()).select_from(FailedMessage).where(*_republishable(f, ids))
    return int((await session.exec(statement)).one())


async def auto_redrive_candidates(
    session: AsyncSession,
    *,
    reasons: Sequence[str],
    channels: Sequence[str],
    actor: str,
    max_per_message: int,
    limit: int,
) -> list[uuid.UUID]:
    """Pending messages the automatic re-drive may republish, oldest failure first.

    A message that fails again after a republish arrives as a new row, so the automatic
    republishes of a notification are counted over every row of it, from the audit trail.
    """
    earlier = aliased(FailedMessage)
    automatic = (
        select(func.count())
        .select_from(FailedMessageEvent)
        .join(earlier, col(earlier.id) == col(FailedMessageEvent.failed_message_id))
        .where(
            col(earlier.notification_id) == col(FailedMessage.notification_id),
            col(FailedMessageEvent.actor) == actor,
            col(FailedMessageEvent.action) == AuditAction.REPUBLISHED.value,
        )
        .scalar_subquery()
    )
    statement = (
        select(FailedMessage.id)
        .where(
            col(FailedMessage.state) == FailedState.PENDING.value,
            col(FailedMessage.republishable).is_(True),
            col(FailedMessage.notification_id).is_not(None),
            col(FailedMessage.reason).in_(list(reasons)),
            col(FailedMessage.channel).in_(list(channels)),
            automatic < max_per_message,
        )
        .order_by(col(FailedMessage.failed_at), col(FailedMessage.id))
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def arrivals_per_hour(session: AsyncSession, since: datetime) -> list[tuple[datetime, int]]:
    """How many failed messages arrived in each UTC hour since ``since`` (empty hours omitted).

    The hours come back as naive UTC times (truncated in UTC, whatever the server's time zone).
    """
    hour = func.date_trunc("hour", func.timezone("UTC", col(FailedMessage.received_at)))
    statement = (
        select(hour, func.count())
        .where(col(FailedMessage.received_at) >= since)
        .group_by(hour)
        .order_by(hour)
    )
    return [(at, int(n)) for at, n in (await session.exec(statement)).all()]


async def with_request_id(
    session: AsyncSession, request_id: str, limit: int
) -> Sequence[FailedMessage]:
    statement = (
        select(FailedMessage)
        .where(col(FailedMessage.request_id) == request_id)
        .order_by(col(FailedMessage.failed_at).desc())
        .limit(limit)
    )
    return (await session.exec(statement)).all()


async def counts(session: AsyncSession) -> list[tuple[str, str | None, str, int]]:
    """(state, channel, reason, count) for every combination present."""
    statement = select(
        FailedMessage.state, FailedMessage.channel, FailedMessage.reason, func.count()
    ).group_by(col(FailedMessage.state), col(FailedMessage.channel), col(FailedMessage.reason))
    rows = (await session.exec(statement)).all()
    return [(state, channel, reason, int(n)) for state, channel, reason, n in rows]


async def archive_failed_before(
    session: AsyncSession, cutoff: datetime, batch: int
) -> list[tuple[uuid.UUID, str | None]]:
    """Archive up to ``batch`` not-yet-archived messages that failed before ``cutoff``.

    Rows another transaction holds (a republish in progress) are left for the next pass.
    Returns (id, channel) of each archived message.
    """
    chosen = (
        select(FailedMessage.id)
        .where(
            col(FailedMessage.failed_at) < cutoff,
            col(FailedMessage.state) != FailedState.ARCHIVED.value,
        )
        .order_by(col(FailedMessage.failed_at))
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(FailedMessage)
        .where(col(FailedMessage.id).in_(chosen.scalar_subquery()))
        .values(state=FailedState.ARCHIVED.value)
        .returning(col(FailedMessage.id), col(FailedMessage.channel))
    )
    result: Any = await session.exec(statement)
    return [(row[0], row[1]) for row in result.all()]
