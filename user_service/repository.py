"""Queries. Functions take the session; none of them commits."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from libs.http.auth import Role
from user_service.models import Client, PushToken, SigningKey, User

Listed = TypeVar("Listed", User, Client)
Row = TypeVar("Row", User, Client, PushToken)

# pg_advisory_xact_lock key serialising signing-key changes across replicas.
SIGNING_KEYS_LOCK_ID = 0x4B45_5953  # "KEYS"


def _contains(value: str) -> str:
    """An ILIKE pattern matching ``value`` literally anywhere."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# ---------------------------------------------------------------------------------------------
# Users


async def _first(
    session: AsyncSession, statement: SelectOfScalar[Row], *, for_update: bool
) -> Row | None:
    if for_update:
        statement = statement.with_for_update()
    return (await session.exec(statement)).first()


async def get_user(
    session: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False
) -> User | None:
    return await _first(session, select(User).where(User.id == user_id), for_update=for_update)


async def get_users(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> list[User]:
    statement = select(User).where(col(User.id).in_(list(user_ids)))
    return list((await session.exec(statement)).all())


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.exec(select(User).where(User.email == email.lower()))).first()


async def email_in_use(
    session: AsyncSession, email: str, *, besides: uuid.UUID | None = None
) -> bool:
    statement = select(User.id).where(User.email == email.lower())
    if besides is not None:
        statement = statement.where(User.id != besides)
    return (await session.exec(statement)).first() is not None


async def count_admins(session: AsyncSession) -> int:
    """The number of admins, locking their rows so that two admins removing each other at the
    same moment cannot leave none."""
    statement = select(User.id).where(User.role == Role.ADMIN.value).with_for_update()
    return len((await session.exec(statement)).all())


async def list_users(
    session: AsyncSession,
    *,
    email: str | None,
    name: str | None,
    role: Role | None,
    offset: int,
    limit: int,
) -> tuple[list[User], int]:
    conditions: list[ColumnElement[bool]] = []
    if email:
        conditions.append(col(User.email).ilike(_contains(email.lower()), escape="\\"))
    if name:
        conditions.append(col(User.name).ilike(_contains(name), escape="\\"))
    if role is not None:
        conditions.append(col(User.role) == role.value)
    return await _page(session, User, conditions, offset=offset, limit=limit)


async def _page(
    session: AsyncSession,
    model: type[Listed],
    conditions: Sequence[ColumnElement[bool]],
    *,
    offset: int,
    limit: int,
) -> tuple[list[Listed], int]:
    """One page of ``model`` rows matching ``conditions``, oldest first, and the total count."""
    total_statement = select(func.count()).select_from(model).where(*conditions)
    total = int((await session.exec(total_statement)).one())
    page_statement = (
        select(model)
        .where(*conditions)
        .order_by(col(model.created_at), col(model.id))
        .offset(offset)
        .limit(limit)
    )
    return list((await session.exec(page_statement)).all()), total


# ---------------------------------------------------------------------------------------------
# Push tokens


async def live_push_tokens(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[PushToken]]:
    """Tokens not pruned, per user, oldest first."""
    by_user: dict[uuid.UUID, list[PushToken]] = defaultdict(list)
    if not user_ids:
        return by_user
    statement = (
        select(PushToken)
        .where(col(PushToken.user_id).in_(user_ids), col(PushToken.pruned_at).is_(None))
        .order_by(col(PushToken.created_at), col(PushToken.id))
    )
    for token in (await session.exec(statement)).all():
        by_user[token.user_id].append(token)
    return by_user


async def push_token_by_value(
    session: AsyncSession, token: str, *, for_update: bool = False
) -> PushToken | None:
    statement = select(PushToken).where(PushToken.token == token)
    return await _first(session, statement, for_update=for_update)


async def get_push_token(
    session: AsyncSession, user_id: uuid.UUID, token_id: uuid.UUID
) -> PushToken | None:
    statement = select(PushToken).where(
        PushToken.id == token_id,
        PushToken.user_id == user_id,
        col(PushToken.pruned_at).is_(None),
    )
    return (await session.exec(statement)).first()


async def live_push_tokens_by_recency(session: AsyncSession, user_id: uuid.UUID) -> list[PushToken]:
    """A user's live tokens, most recently seen first."""
    statement = (
        select(PushToken)
        .where(PushToken.user_id == user_id, col(PushToken.pruned_at).is_(None))
        .order_by(col(PushToken.last_seen_at).desc(), col(PushToken.id))
    )
    return list((await session.exec(statement)).all())


# ---------------------------------------------------------------------------------------------
# Signing keys


async def lock_signing_keys(session: AsyncSession) -> None:
    """Serialise key creation and rotation across replicas until the transaction ends."""
    await session.exec(select(func.pg_advisory_xact_lock(SIGNING_KEYS_LOCK_ID)))


async def active_signing_key(session: AsyncSession) -> SigningKey | None:
    statement = (
        select(SigningKey)
        .where(col(SigningKey.retired_at).is_(None), col(SigningKey.activated_at).is_not(None))
        .order_by(col(SigningKey.activated_at).desc())
        .limit(1)
    )
    return (await session.exec(statement)).first()


async def unretired_signing_keys(session: AsyncSession) -> list[SigningKey]:
    statement = select(SigningKey).where(col(SigningKey.retired_at).is_(None))
    return list((await session.exec(statement)).all())


async def published_signing_keys(session: AsyncSession, now: datetime) -> list[SigningKey]:
    """Keys whose tokens may still be valid: active ones and replaced ones not yet retired."""
    statement = (
        select(SigningKey)
        .where(or_(col(SigningKey.retired_at).is_(None), col(SigningKey.retired_at) > now))
        .order_by(col(SigningKey.created_at).desc())
    )
    return list((await session.exec(statement)).all())


async def all_signing_keys(session: AsyncSession) -> list[SigningKey]:
    statement = select(SigningKey).order_by(col(SigningKey.created_at).desc())
    return list((await session.exec(statement)).all())


async def get_signing_key(session: AsyncSession, kid: str) -> SigningKey | None:
    statement = select(SigningKey).where(SigningKey.kid == kid).with_for_update()
    return (await session.exec(statement)).first()


# ---------------------------------------------------------------------------------------------
# Clients


async def get_client(
    session: AsyncSession, client_id: uuid.UUID, *, for_update: bool = False
) -> Client | None:
    statement = select(Client).where(Client.id == client_id)
    return await _first(session, statement, for_update=for_update)


async def list_clients(
    session: AsyncSession, *, revoked: bool | None, offset: int, limit: int
) -> tuple[list[Client], int]:
    conditions: list[ColumnElement[bool]] = []
    if revoked is not None:
        revoked_at = col(Client.revoked_at)
        conditions.append(revoked_at.is_not(None) if revoked else revoked_at.is_(None))
    return await _page(session, Client, conditions, offset=offset, limit=limit)
