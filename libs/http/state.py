"""Typed service state: built once by the lifespan, yielded to Starlette, read by dependencies.

A service's lifespan builds one state object (a dataclass naming every client it opened) and
yields it with :func:`lifespan_state`; Starlette hands a copy of that mapping to every request as
``request.state``. Routes never reach into ``app.state``: they declare what they need through
``Annotated`` dependencies built by :func:`state_dependency`, so a route signature says what it
uses and mypy checks it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Generic, Protocol, TypeVar, runtime_checkable

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection

S = TypeVar("S")

STATE_KEY = "herald_state"


def lifespan_state(state: object) -> dict[str, object]:
    """What a lifespan yields: Starlette copies it into every request's ``request.state``."""
    return {STATE_KEY: state}


_CHECKED: set[tuple[type, type]] = set()
"""(state type, kind) pairs already found to match: ``isinstance`` against a runtime-checkable
protocol inspects every member, and this runs on every request."""


def read_state(connection: HTTPConnection, kind: type[S]) -> S:
    """The service state of this request, checked to be a ``kind``."""
    state = getattr(connection.state, STATE_KEY, None)
    if (type(state), kind) in _CHECKED:
        return state  # type: ignore[return-value]
    if not isinstance(state, kind):
        raise RuntimeError(
            f"no {kind.__name__} on this request: is the app's lifespan running? (got {state!r})"
        )
    _CHECKED.add((type(state), kind))
    return state


class StateGetter(Generic[S]):
    """A FastAPI dependency returning the request's state as a ``kind`` (``of`` for plain code).

    Its ``__call__`` is a coroutine on purpose: FastAPI runs a plain function dependency in a
    worker thread, a thread hop on every request for a dictionary lookup.
    """

    def __init__(self, kind: type[S]) -> None:
        self.kind = kind

    async def __call__(self, request: Request) -> S:
        return read_state(request, self.kind)

    def of(self, connection: HTTPConnection) -> S:
        return read_state(connection, self.kind)


def state_dependency(kind: type[S]) -> StateGetter[S]:
    return StateGetter(kind)


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
