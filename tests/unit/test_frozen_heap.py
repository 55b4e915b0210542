"""A served process freezes its heap once its lifespan has started (``libs.http.serve``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from starlette.types import Message, Receive, Scope, Send

from libs.http.serve import GC_THRESHOLDS, FrozenAfterStartup

pytestmark = pytest.mark.unit


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the rest of the test process keeps collecting everything
    gc.set_threshold(*thresholds)


async def test_the_heap_is_frozen_when_the_lifespan_reports_started(unfrozen: None) -> None:
    seen: list[tuple[str, int]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        seen.append(("startup", gc.get_freeze_count()))  # the app's own startup: not yet
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[tuple[str, int]] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append((message["type"], gc.get_freeze_count()))

    await FrozenAfterStartup(app)({"type": "lifespan"}, receive, send)

    assert seen == [("startup", 0)]
    assert gc.get_threshold() == GC_THRESHOLDS  # young collections every 20,000 allocations
    assert [kind for kind, _ in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert all(frozen > 0 for _, frozen in sent)  # frozen before the server hears "started"


async def test_requests_pass_through_untouched(unfrozen: None) -> None:
    calls: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope: Scope = {"type": "http", "path": "/health"}
    await FrozenAfterStartup(app)(scope, receive, send)
    assert calls == [scope]
    assert sent == [{"type": "http.response.start", "status": 204, "headers": []}]
    assert gc.get_freeze_count() == 0
