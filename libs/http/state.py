"""Typed service state: built once by the lifespan, yielded to Starlette, read by dependencies.

A service's lifespan builds one state object (a dataclass naming every client it opened) and
yields it with :func:`lifespan_state`; Starlette hands a copy of that mapping to every request as
``request.state``. Routes never reach into ``app.state``: they declare what they need through
``Annotated`` dependencies built by :func:`state_dependency`, so a route signature says what it
uses and mypy checks it. (A request's database session: :mod:`libs.http.sessions`.)
"""

from __future__ import annotations

from typing import Generic, TypeVar

from fastapi import Request
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
