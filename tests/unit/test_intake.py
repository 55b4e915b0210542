"""NotificationIntake with in-memory idempotency, status store, publisher and reference checks.

tests/gateway runs the same rules through the HTTP API against Redis and RabbitMQ.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.intake import (
    NOTIFICATION_NAMESPACE,
    Accepted,
    NotificationIntake,
    notification_id_of,
)
from gateway.schemas import NotificationRequest
from libs.clients.errors import UpstreamUnavailable
from libs.http.auth import Principal, Role
from libs.http.errors import Conflict, ServiceUnavailable, Unprocessable
from libs.logging import bind_correlation_id
from libs.messaging import headers as H
from libs.messaging.publisher import PublishFailed
from libs.notification.message import Channel, NotificationMessage
from libs.notification.status import Status
from tests.support.fakes import (
    InMemoryIdempotencyStore,
    InMemoryStatusStore,
    InMemoryTemplates,
    InMemoryUsers,
    RecordingPublisher,
)

pytestmark = pytest.mark.unit

CALLER = Principal(sub="billing-backend", role=Role.SERVICE, jti="j", exp=0)


class Gateway:
    def __init__(
        self, *, publish_delay: float = 0.0, pending_ttl: int = 30, in_progress_wait: float = 10.0
    ) -> None:
        self.idempotency = InMemoryIdempotencyStore()
        self.status = InMemoryStatusStore()
        self.publisher = RecordingPublisher(delay=publish_delay)
        self.users = InMemoryUsers()
        self.templates = InMemoryTemplates()
        self.user = self.users.add()
        self.intake = NotificationIntake(
            idempotency=self.idempotency,
            status=self.status,
            publisher=self.publisher,
            users=self.users,
            templates=self.templates,
            idempotency_ttl=86400,
            pending_ttl=pending_ttl,
            confirm_timeout=1,
            in_progress_wait=in_progress_wait,
        )

    def request(self, **overrides: object) -> NotificationRequest:
        values: dict[str, object] = {
            "notification_type": "email",
            "user_id": str(self.user.id),
            "template_code": "welcome",
            "variables": {"name": "Ada"},
            "request_id": f"order-{uuid.uuid4().hex[:8]}",
            "priority": 4,
        }
        return NotificationRequest.model_validate(values | overrides)


@pytest.fixture
def gw() -> Gateway:
    return Gateway()


async def test_accepting_records_pending_and_publishes_one_persistent_message(gw):
    request = gw.request()
    accepted = await gw.intake.submit(CALLER, request)
    assert accepted.replayed is False
    assert accepted.response.status is Status.PENDING
    nid = str(accepted.response.notification_id)
    record = await gw.status.get(nid)
    assert record is not None
    assert (record.status, record.owner, record.request_id) == (
        Status.PENDING,
        CALLER.sub,
        request.request_id,
    )
    [published] = gw.publisher.published
    assert (published.exchange, published.routing_key) == ("notifications.direct", "email")
    assert published.message_id == nid
    assert published.priority == 4
    assert published.headers == {H.ATTEMPTS: 0}
    message = NotificationMessage.from_bytes(published.body)
    assert message.variables == {"name": "Ada"}


async def test_the_same_request_again_replays_the_answer_and_publishes_nothing(gw):
    request = gw.request()
    first = await gw.intake.submit(CALLER, request)
    again = await gw.intake.submit(CALLER, request)
    assert again.replayed is True
    assert again.response == first.response
    assert len(gw.publisher.published) == 1


async def test_the_same_request_id_from_another_caller_is_another_notification(gw):
    request = gw.request()
    mine = await gw.intake.submit(CALLER, request)
    other = Principal(sub="shop-backend", role=Role.SERVICE, jti="k", exp=0)
    theirs = await gw.intake.submit(other, request)
    assert theirs.response.notification_id != mine.response.notification_id
    assert len(gw.publisher.published) == 2


async def test_a_different_body_with_a_used_request_id_is_a_conflict(gw):
    request = gw.request()
    await gw.intake.submit(CALLER, request)
    with pytest.raises(Conflict) as error:
        await gw.intake.submit(CALLER, request.model_copy(update={"priority": 9}))
    assert error.value.code == "idempotency_conflict"
    assert len(gw.publisher.published) == 1


async def test_concurrent_duplicates_publish_once_and_all_get_the_same_answer():
    gw = Gateway(publish_delay=0.05)
    request = gw.request()
    answers = await asyncio.gather(*(gw.intake.submit(CALLER, request) for _ in range(20)))
    assert len(gw.publisher.published) == 1
    assert {a.response.notification_id for a in answers} == {answers[0].response.notification_id}
    assert sum(not a.replayed for a in answers) == 1


async def test_an_unconfirmed_publish_is_503_leaves_no_trace_and_may_be_retried(gw):
    request = gw.request()
    gw.publisher.fail = True
    with pytest.raises(ServiceUnavailable) as error:
        await gw.intake.submit(CALLER, request)
    assert error.value.code == "broker_unavailable"
    assert gw.status.records == {}
    assert gw.idempotency.records == {}
    gw.publisher.fail = False
    accepted = await gw.intake.submit(CALLER, request)
    assert accepted.replayed is False
    assert len(gw.publisher.published) == 1


async def test_the_retry_after_a_crash_between_confirm_and_record_keeps_the_same_id(gw):
    request = gw.request()
    first = await gw.intake.submit(CALLER, request)
    gw.idempotency.records.clear()  # the gateway died before writing "accepted"
    retry = await gw.intake.submit(CALLER, request)
    # the same notification id: the delivery service's send claim stops a second send
    assert retry.response.notification_id == first.response.notification_id


async def test_a_request_still_in_flight_past_its_window_is_409_in_progress():
    gw = Gateway(pending_ttl=0)
    request = gw.request()
    slow = asyncio.create_task(gw.intake.submit(CALLER, request))
    gw.publisher.delay = 2.0
    await asyncio.sleep(0)
    with pytest.raises(Conflict) as error:
        await gw.intake.submit(CALLER, request)
    assert error.value.code == "request_in_progress"
    slow.cancel()


async def test_a_retry_never_waits_longer_than_the_in_progress_wait_for_a_stuck_holder():
    # the holder's claim outlives it (a Redis cut kept it from releasing): the retry is told to
    # come back, it is not held open until the claim's 30 s expire (clients time out before)
    gw = Gateway(pending_ttl=30, in_progress_wait=0.2)
    request = gw.request()
    gw.publisher.delay = 60.0
    stuck = asyncio.create_task(gw.intake.submit(CALLER, request))
    await asyncio.sleep(0.01)
    started = asyncio.get_running_loop().time()
    with pytest.raises(Conflict) as error:
        await gw.intake.submit(CALLER, request)
    assert error.value.code == "request_in_progress"
    assert error.value.headers == {"Retry-After": "1"}
    assert asyncio.get_running_loop().time() - started < 5
    stuck.cancel()


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"user_id": str(uuid.uuid4())}, "unknown_user"),
        ({"template_code": "no_such_template"}, "unknown_template"),
        ({"template_code": "welcome_push"}, "template_type_mismatch"),
    ],
)
async def test_unknown_references_are_refused_and_nothing_is_queued(gw, overrides, code):
    with pytest.raises(Unprocessable) as error:
        await gw.intake.submit(CALLER, gw.request(**overrides))
    assert error.value.code == code
    assert gw.publisher.published == []
    assert gw.status.records == {}


async def test_references_are_not_checked_while_their_services_are_unreachable(gw):
    gw.users.failure = UpstreamUnavailable("user_service", "refused")
    gw.templates.failure = UpstreamUnavailable("template_service", "refused")
    accepted = await gw.intake.submit(CALLER, gw.request(user_id=str(uuid.uuid4())))
    assert accepted.response.status is Status.PENDING
    assert len(gw.publisher.published) == 1


async def test_a_request_id_finds_its_notification(gw):
    request = gw.request(notification_type=Channel.EMAIL.value)
    accepted = await gw.intake.submit(CALLER, request)
    found = await gw.intake.notification_id_for(CALLER, request.request_id)
    assert found == str(accepted.response.notification_id)
    other = Principal(sub="someone-else", role=Role.SERVICE, jti="x", exp=0)
    assert await gw.intake.notification_id_for(other, request.request_id) is None


async def test_a_confirmed_publish_whose_record_cannot_be_saved_is_reported_accepted(gw):
    """The broker confirmed, then Redis failed: the client hears the truth (accepted), and its
    retry with the same request_id carries the same notification id (delivered once)."""
    request = gw.request()
    gw.idempotency.settle_failure = RedisConnectionError("Redis went away")
    first = await gw.intake.submit(CALLER, request)
    assert (first.replayed, first.remembered) == (False, False)
    assert len(gw.publisher.published) == 1
    gw.idempotency.settle_failure = None
    gw.idempotency.records.clear()  # the pending record expired meanwhile
    retry = await gw.intake.submit(CALLER, request)
    assert retry.response.notification_id == first.response.notification_id
    assert {p.message_id for p in gw.publisher.published} == {str(first.response.notification_id)}


async def test_redis_down_before_the_publish_is_an_error_and_nothing_is_queued(gw):
    gw.status.failure = RedisConnectionError("connection refused")
    request = gw.request()
    with pytest.raises(ServiceUnavailable) as refused:
        await gw.intake.submit(CALLER, request)
    assert refused.value.code == "redis_unavailable"
    assert gw.publisher.published == []
    # the request id was given back: a retry once Redis is back is accepted
    gw.status.failure = None
    assert (await gw.intake.submit(CALLER, request)).replayed is False


async def test_a_batch_answers_each_item_as_alone_and_in_order(gw):
    stranger = gw.request(user_id=str(uuid.uuid4()))
    twice = gw.request()
    requests = [gw.request(), stranger, twice, twice, gw.request(template_code="nope")]
    answers = await gw.intake.submit_many(CALLER, requests)
    assert [type(a).__name__ for a in answers] == [
        "Accepted",
        "Unprocessable",
        "Accepted",
        "Accepted",
        "Unprocessable",
    ]
    assert answers[1].code == "unknown_user"
    assert answers[4].code == "unknown_template"
    # a request id given twice in one batch is published once; the second is its replay
    assert (answers[2].replayed, answers[3].replayed) == (False, True)
    assert answers[2].response == answers[3].response
    assert len(gw.publisher.published) == 2
    # refused items gave their request ids back
    assert (CALLER.sub, stranger.request_id) not in gw.idempotency.records


async def test_a_batch_where_some_publishes_fail_reports_only_the_confirmed(gw):
    requests = [gw.request() for _ in range(4)]
    real_publish = gw.publisher.publish
    refused_ids: set[str] = set()

    async def flaky(**kwargs):
        if len(refused_ids) < 2 and kwargs["message_id"] not in refused_ids:
            refused_ids.add(kwargs["message_id"])
            raise PublishFailed("nack (test)")
        await real_publish(**kwargs)

    gw.publisher.publish = flaky
    answers = await gw.intake.submit_many(CALLER, requests)
    refused = [a for a in answers if isinstance(a, ServiceUnavailable)]
    assert len(refused) == 2
    assert {r.code for r in refused} == {"broker_unavailable"}
    published = {p.message_id for p in gw.publisher.published}
    accepted = {str(a.response.notification_id) for a in answers if not isinstance(a, Exception)}
    assert accepted == published
    assert len(published) == 2
    assert set(gw.status.records) == published  # no status left for what was not queued


@pytest.mark.parametrize("size", [1, 3])
async def test_an_unexpected_error_is_raised_not_answered_and_gives_the_ids_back(gw, size):
    """A bug (or a dependency failing in a way nobody mapped) is the caller's 500, never turned
    into an item's answer; the request ids are free again for a retry."""
    requests = [gw.request() for _ in range(size)]

    async def broken(**kwargs):
        raise RuntimeError("bug in the publisher (test)")

    gw.publisher.publish = broken
    with pytest.raises(RuntimeError, match="bug in the publisher"):
        await gw.intake.submit_many(CALLER, requests)
    assert gw.idempotency.records == {}


def _count_claims(gw: Gateway) -> list[tuple[str, int]]:
    """(caller, request ids) of every claim the intake makes from now on."""
    calls: list[tuple[str, int]] = []
    claim = gw.idempotency.claim

    async def counted(scope, claims, ttl):
        calls.append((scope, len(claims)))
        return await claim(scope, claims, ttl)

    gw.idempotency.claim = counted  # type: ignore[method-assign]
    return calls


async def _submit_as(gw: Gateway, principal: Principal, request, correlation_id: str):
    bind_correlation_id(correlation_id)  # (each gathered call is a task with its own context)
    return await gw.intake.submit(principal, request)


async def test_single_requests_of_one_turn_are_accepted_together_each_with_its_own_answer(gw):
    claims = _count_claims(gw)
    requests = [gw.request() for _ in range(5)]
    answers = await asyncio.gather(
        *(_submit_as(gw, CALLER, r, f"cid-{n}") for n, r in enumerate(requests))
    )
    assert claims == [(CALLER.sub, 5)]  # one claim for the five
    assert [a.response.request_id for a in answers] == [r.request_id for r in requests]
    assert len({a.response.notification_id for a in answers}) == 5
    # each message carries the correlation id of the request that sent it
    sent = {p.message_id: p.correlation_id for p in gw.publisher.published}
    assert sent == {str(a.response.notification_id): f"cid-{n}" for n, a in enumerate(answers)}
    # and a later request is a turn of its own
    await gw.intake.submit(CALLER, gw.request())
    assert claims[1:] == [(CALLER.sub, 1)]


async def test_callers_in_one_turn_are_never_accepted_as_one_batch(gw):
    claims = _count_claims(gw)
    other = Principal(sub="crm-backend", role=Role.SERVICE, jti="k", exp=0)
    mine, theirs = gw.request(), gw.request()
    a, b = await asyncio.gather(
        _submit_as(gw, CALLER, mine, "c1"), _submit_as(gw, other, theirs, "c2")
    )
    assert sorted(claims) == [("billing-backend", 1), ("crm-backend", 1)]
    owners = {nid: r["owner"] for nid, r in gw.status.records.items()}
    assert owners == {
        str(a.response.notification_id): CALLER.sub,
        str(b.response.notification_id): other.sub,
    }


async def test_a_refused_request_in_a_turn_fails_alone(gw):
    stranger = gw.request(user_id=str(uuid.uuid4()))
    good = [gw.request(), gw.request()]
    outcomes = await asyncio.gather(
        *(gw.intake.submit(CALLER, r) for r in [good[0], stranger, good[1]]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], Unprocessable)
    assert outcomes[1].code == "unknown_user"
    assert [o.replayed for o in (outcomes[0], outcomes[2]) if isinstance(o, Accepted)] == [
        False,
        False,
    ]
    assert len(gw.publisher.published) == 2


async def test_a_request_cancelled_while_its_turn_is_under_way_leaves_the_others_alone():
    gw = Gateway(publish_delay=0.05)
    requests = [gw.request() for _ in range(3)]
    tasks = [asyncio.create_task(gw.intake.submit(CALLER, r)) for r in requests]
    await asyncio.sleep(0.01)  # the turn is publishing
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [d.replayed for d in (done[0], done[2]) if isinstance(d, Accepted)] == [False, False]
    # the broker confirmed the cancelled one too: its retry is told so, and nothing is resent
    again = await gw.intake.submit(CALLER, requests[1])
    assert again.replayed is True
    assert len(gw.publisher.published) == 3


async def test_an_unexpected_error_in_a_turn_is_raised_by_each_of_its_requests(gw):
    async def broken(**kwargs):
        raise RuntimeError("bug in the publisher (test)")

    gw.publisher.publish = broken
    outcomes = await asyncio.gather(
        *(gw.intake.submit(CALLER, gw.request()) for _ in range(3)), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [RuntimeError] * 3
    assert gw.idempotency.records == {}  # the ids were given back


@given(scope=st.text(), request_id=st.text(), fp=st.text(alphabet="0123456789abcdef"))
def test_the_notification_id_is_the_uuid5_of_caller_request_id_and_fingerprint(
    scope, request_id, fp
):
    nid, text = notification_id_of(scope, request_id, fp)
    expected = uuid.uuid5(NOTIFICATION_NAMESPACE, f"{scope}\n{request_id}\n{fp}")
    assert nid == expected
    assert text == str(expected)
    assert nid.version == 5
