"""DeliveryPipeline with in-memory stand-ins for the status store, claims, clients and adapter.

The same behaviours run against RabbitMQ, Redis, PostgreSQL and real protocol servers in
tests/e2e and tests/chaos; here each decision is reached in milliseconds.
"""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from libs.clients.errors import UpstreamUnavailable
from libs.clients.models import Preferences
from libs.delivery.pipeline import DeliveryPipeline
from libs.delivery.providers import (
    OutcomeUnknown,
    PermanentProviderError,
    ProviderUnavailable,
    RecipientGone,
    TransientProviderError,
)
from libs.messaging.outcomes import PERMANENT_ERROR, Ack, DeadLetter, Retry
from libs.notification.message import Channel
from libs.notification.status import Status, receipt_allowed_from
from tests.support.fakes import (
    InMemoryClaims,
    InMemoryStatusStore,
    InMemoryTemplates,
    InMemoryUsers,
    ScriptedAdapter,
    delivery_of,
    message_for,
    new_notification,
)

pytestmark = pytest.mark.unit


class World:
    """A pipeline for one channel and everything it talks to, in memory."""

    def __init__(self, channel: Channel = Channel.EMAIL) -> None:
        self.status = InMemoryStatusStore()
        self.claims = InMemoryClaims()
        self.users = InMemoryUsers()
        self.templates = InMemoryTemplates()
        self.adapter = ScriptedAdapter(
            channel=channel, provider="smtp" if channel == "email" else "fcm"
        )
        self.pipeline = DeliveryPipeline(
            adapter=self.adapter,
            users=self.users,
            renderer=self.templates,
            status=self.status,
            claims=self.claims,
            service=f"{channel.value}_service",
        )

    async def accepted(self, channel: Channel = Channel.EMAIL, **user: object):
        profile = self.users.add(**user)  # type: ignore[arg-type]
        message = message_for(profile, channel)
        await self.status.create(new_notification(message))
        return message


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def push() -> World:
    return World(Channel.PUSH)


async def test_a_notification_is_sent_once_and_delivered(world):
    message = await world.accepted()
    decision = await world.pipeline.handle(delivery_of(message))
    nid = str(message.notification_id)
    assert decision == Ack("delivered")
    assert world.adapter.sent == [(nid, "ada@example.com")]
    assert world.status.status_of(nid) is Status.DELIVERED
    assert world.status.events(nid) == ["accepted", "processing", "delivered"]
    record = await world.status.get(nid)
    assert record is not None
    assert (record.provider, record.attempts) == ("smtp", 1)
    assert world.claims.commits[0].written == ["smtp"]  # the mark came at the point of no return


async def test_a_redelivered_message_already_sent_is_not_sent_again(world):
    message = await world.accepted()
    await world.pipeline.handle(delivery_of(message))
    # the consumer died before acking: the broker delivers it again, status still processing
    world.status.records[str(message.notification_id)]["status"] = Status.PROCESSING
    decision = await world.pipeline.handle(delivery_of(message))
    assert decision == Ack("delivered")
    assert len(world.adapter.sent) == 1


async def test_a_finished_notification_is_acked_without_work(world):
    message = await world.accepted()
    await world.pipeline.handle(delivery_of(message))
    decision = await world.pipeline.handle(delivery_of(message))
    assert decision == Ack("already_final")
    assert len(world.adapter.sent) == 1


async def test_opted_out_user_is_skipped_with_the_reason(world):
    message = await world.accepted(preferences=Preferences(email=False, push=True))
    decision = await world.pipeline.handle(delivery_of(message))
    nid = str(message.notification_id)
    assert decision == Ack("skipped")
    assert world.adapter.sent == []
    record = await world.status.get(nid)
    assert record is not None
    assert record.status is Status.SKIPPED
    assert record.last_error == "user opted out of email notifications"


async def test_a_user_without_devices_is_skipped_for_push(push):
    message = await push.accepted(Channel.PUSH, devices=())
    decision = await push.pipeline.handle(delivery_of(message))
    assert decision == Ack("skipped")
    assert push.status.status_of(str(message.notification_id)) is Status.SKIPPED


async def test_a_message_on_the_wrong_queue_is_invalid(world):
    message = await world.accepted(Channel.PUSH)
    decision = await world.pipeline.handle(delivery_of(message))
    assert isinstance(decision, DeadLetter)
    assert (decision.reason, decision.error_class) == ("invalid_message", "WrongQueue")


async def test_a_message_without_a_status_record_gets_one(world):
    profile = world.users.add()
    message = message_for(profile)  # published around the gateway, or its status expired
    decision = await world.pipeline.handle(delivery_of(message))
    assert decision == Ack("delivered")
    assert world.status.events(str(message.notification_id)) == [
        "accepted",
        "processing",
        "delivered",
    ]


async def test_an_unknown_user_is_dead_lettered_as_permanent(world):
    profile = world.users.add()
    message = message_for(profile)
    await world.status.create(new_notification(message))
    del world.users.users[str(profile.id)]
    decision = await world.pipeline.handle(delivery_of(message))
    assert isinstance(decision, DeadLetter)
    assert (decision.reason, decision.error_class) == (PERMANENT_ERROR, "UserNotFound")


async def test_a_template_of_the_other_channel_is_refused(world):
    profile = world.users.add()
    message = message_for(profile, template_code="welcome_push")
    await world.status.create(new_notification(message))
    decision = await world.pipeline.handle(delivery_of(message))
    assert isinstance(decision, DeadLetter)
    assert decision.error_class == "template_type_mismatch"
    assert world.adapter.sent == []


async def test_our_own_service_down_waits_without_an_attempt(world):
    message = await world.accepted()
    world.users.failure = UpstreamUnavailable("user_service", "connection refused")
    decision = await world.pipeline.handle(delivery_of(message))
    assert isinstance(decision, Retry)
    assert decision.count_attempt is False
    nid = str(message.notification_id)
    assert world.status.events(nid)[-1] == "waiting_for_dependency"
    assert world.adapter.sent == []


async def test_redis_failing_mid_way_is_a_wait_not_an_attempt(world):
    message = await world.accepted()
    world.templates.failure = RedisConnectionError("reset")
    decision = await world.pipeline.handle(delivery_of(message))
    assert isinstance(decision, Retry)
    assert (decision.error_class, decision.count_attempt) == ("RedisError", False)


async def test_redis_down_before_processing_starts_is_a_wait_not_an_attempt(world):
    message = await world.accepted()
    world.status.failure = RedisConnectionError("connection refused")
    decision = await world.pipeline.handle(delivery_of(message))
    assert isinstance(decision, Retry)
    assert decision.count_attempt is False
    assert world.adapter.sent == []


async def test_a_transient_failure_spends_an_attempt_and_frees_the_claim(world):
    message = await world.accepted()
    world.adapter.script["email"] = [TransientProviderError("smtp", "451 later")]
    decision = await world.pipeline.handle(delivery_of(message))
    nid = str(message.notification_id)
    assert isinstance(decision, Retry)
    assert decision.count_attempt is True
    assert world.status.events(nid)[-1] == "attempt_failed"
    assert world.claims.state == {}  # released: the retry may send
    retried = await world.pipeline.handle(delivery_of(message, attempts=1))
    assert retried == Ack("delivered")
    record = await world.status.get(nid)
    assert record is not None
    assert record.attempts == 2


async def test_every_provider_unavailable_waits_without_an_attempt(world):
    message = await world.accepted()
    world.adapter.script["email"] = [ProviderUnavailable("smtp", "breaker open", retry_after_ms=7)]
    decision = await world.pipeline.handle(delivery_of(message))
    assert isinstance(decision, Retry)
    assert (decision.count_attempt, decision.not_before_ms) == (False, 7)
    assert world.status.events(str(message.notification_id))[-1] == "waiting_for_provider"


async def test_a_claim_held_by_another_consumer_waits_without_an_attempt(world):
    message = await world.accepted()
    world.claims.held_by_other.add(world.claims.key("email", str(message.notification_id), "email"))
    decision = await world.pipeline.handle(delivery_of(message))
    assert isinstance(decision, Retry)
    assert (decision.count_attempt, decision.error_class) == (False, "SendClaimBusy")
    assert world.adapter.sent == []


async def test_partial_success_resends_only_to_the_devices_that_failed(push):
    message = await push.accepted(Channel.PUSH, devices=("tok-a", "tok-b"))
    push.adapter.script["dev-1"] = [TransientProviderError("fcm", "503")]
    first = await push.pipeline.handle(delivery_of(message))
    assert isinstance(first, Retry)
    assert [address for _, address in push.adapter.sent] == ["tok-a"]
    second = await push.pipeline.handle(delivery_of(message, attempts=1))
    assert second == Ack("delivered")
    assert [address for _, address in push.adapter.sent] == ["tok-a", "tok-b"]


async def test_a_gone_device_is_pruned_and_the_others_still_delivered(push):
    message = await push.accepted(Channel.PUSH, devices=("tok-a", "tok-dead"))
    push.adapter.script["dev-1"] = [RecipientGone("fcm", "UNREGISTERED", code="unregistered")]
    decision = await push.pipeline.handle(delivery_of(message))
    assert decision == Ack("delivered")
    assert push.adapter.pruned == [("tok-dead", "unregistered")]
    record = await push.status.get(str(message.notification_id))
    assert record is not None
    assert record.timeline[-1].model_extra == {"recipients": 1, "refused": 1}


async def test_a_recipient_refused_for_good_is_dead_lettered_then_recorded_failed(world):
    message = await world.accepted()
    refusal = PermanentProviderError("smtp", "550 no such user", code="recipient_refused")
    world.adapter.script["email"] = [refusal]
    delivery = delivery_of(message)
    decision = await world.pipeline.handle(delivery)
    assert isinstance(decision, DeadLetter)
    assert decision.error_class == "recipient_refused"
    await world.pipeline.on_dead_letter(delivery, decision.reason, decision.error)
    record = await world.status.get(str(message.notification_id))
    assert record is not None
    assert record.status is Status.FAILED
    assert record.timeline[-1].model_extra == {"reason": PERMANENT_ERROR}


async def test_an_unknown_outcome_is_unconfirmed_and_a_redelivery_does_not_send_again(world):
    message = await world.accepted()
    world.adapter.script["email"] = [OutcomeUnknown("smtp", "no reply after the end of data")]
    decision = await world.pipeline.handle(delivery_of(message))
    nid = str(message.notification_id)
    assert decision == Ack("unconfirmed")
    record = await world.status.get(nid)
    assert record is not None
    assert record.status is Status.UNCONFIRMED
    assert "no reply" in (record.last_error or "")
    # the broker delivers it again (say the ack was lost): the claim says the outcome is unknown
    world.status.records[nid]["status"] = Status.PROCESSING
    again = await world.pipeline.handle(delivery_of(message))
    assert again == Ack("unconfirmed")
    assert world.adapter.sent == []


async def test_a_receipt_may_settle_an_unconfirmed_notification(world):
    message = await world.accepted()
    world.adapter.script["email"] = [OutcomeUnknown("smtp", "timeout")]
    await world.pipeline.handle(delivery_of(message))
    nid = str(message.notification_id)
    result = await world.status.transition(
        nid,
        Status.DELIVERED,
        event="receipt",
        service="report",
        allowed_from=receipt_allowed_from(Status.DELIVERED),
    )
    assert result.applied
    assert world.status.status_of(nid) is Status.DELIVERED
