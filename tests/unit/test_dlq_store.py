"""The failed.queue handler: waits out a database outage, parks a message that cannot be stored."""

from __future__ import annotations

import asyncio

import pytest

from dlq_service.consumer import UNSTORABLE, StoreFailedMessage
from dlq_service.failures import IncomingFailure
from dlq_service.service import StorageUnavailable
from libs.messaging.outcomes import Ack, DeadLetter, Delivery, Requeue

pytestmark = pytest.mark.unit


class ScriptedStore:
    """Raises the scripted errors in turn, then stores."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def store(self, incoming: IncomingFailure) -> bool:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return True


def failed_delivery() -> Delivery[bytes]:
    return Delivery(
        message=b'{"not": "a notification"}',
        message_id="m-1",
        correlation_id=None,
        headers={"x-failure-reason": "invalid_message"},
        routing_key="failed",
        redelivered=False,
        priority=0,
    )


def handler(store: ScriptedStore, stopping: asyncio.Event | None = None) -> StoreFailedMessage:
    return StoreFailedMessage(
        store, stopping or asyncio.Event(), first_backoff=0.001, max_backoff=0.01
    )


async def test_a_database_outage_is_waited_out_however_long_it_lasts():
    store = ScriptedStore(*[StorageUnavailable("down") for _ in range(10)])
    assert await handler(store)(failed_delivery()) == Ack("stored")
    assert store.calls == 11


async def test_a_message_that_cannot_be_stored_is_parked_with_its_reason_not_retried_forever():
    store = ScriptedStore(*[ValueError("value out of range") for _ in range(100)])
    decision = await handler(store)(failed_delivery())
    assert isinstance(decision, DeadLetter)
    assert decision.reason == UNSTORABLE
    assert "value out of range" in decision.error
    assert store.calls == 3


async def test_outages_do_not_count_towards_parking():
    store = ScriptedStore(
        ValueError("odd"), StorageUnavailable("down"), StorageUnavailable("down"), ValueError("odd")
    )
    assert await handler(store)(failed_delivery()) == Ack("stored")


async def test_at_shutdown_an_unstored_message_is_given_back_untouched():
    stopping = asyncio.Event()
    store = ScriptedStore(*[StorageUnavailable("down") for _ in range(1000)])
    task = asyncio.create_task(handler(store, stopping)(failed_delivery()))
    await asyncio.sleep(0.05)
    stopping.set()
    assert await task == Requeue("not_stored_at_shutdown")
