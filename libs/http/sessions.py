"""A database session per request, for the services that own a database (a module of its own:
the services without one do not import SQLAlchemy)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Protocol, runtime_checkable

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from libs.http.state import read_state


@runtime_checkable
class HasSessions(Protocol):
    """A state with a database: :data:`SessionDep` opens sessions from it."""

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: commit on success, roll back on any error."""
    factory = read_state(request, HasSessions).sessions  # type: ignore[type-abstract]
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit (or roll back) before the response is sent. With FastAPI's default
# "request" scope the commit would run after the client already received its 2xx.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
