"""Topology, confirmed publishing and the ack/retry/dead-letter rules, on a real broker.

Every test that takes the ``broker`` fixture runs twice: on classic queues and on quorum queues
(``QUEUE_TYPE=quorum``, what a replicated cluster runs). Quorum queues work on the shared
single-node broker; the three-node cluster itself is exercised in tests/cluster/.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import cast

import aio_pika
import aiormq
import pytest

from libs.messaging import headers as H
from libs.messaging.connection import broker_urls, connect, declare_topology
from libs.messaging.consumer import QueueConsumer
from libs.messaging.outcomes import Ack, DeadLetter, Delivery, Requeue, Retry
from libs.messaging.policy import RetryPolicy
from libs.messaging.publisher import ConfirmedPublisher, OutgoingMessage, PublishFailed
from libs.messaging.topology import (
    DEAD_LETTER_EXCHANGE,
    DIRECT_EXCHANGE,
    FAILED_QUEUE,
    PARKED_QUEUE,
    PARKED_ROUTING_KEY,
    QueueType,
    build_topology,
    delay_queue,
)
from libs.notification.message import Channel, NotificationMessage
from tests.support.amqp import get_one, publish_raw, queue_depth

POLICY = RetryPolicy(delays_ms=(100, 200), jitter=0.1, claim_wait_ms=100, park_delays_ms=(300,))


def topology(queue_type: QueueType = "classic"):
    return build_topology({c: POLICY.queue_delays() for c in Channel}, queue_type=queue_type)


def make_message(**overrides) -> NotificationMessage:
    values = {
        "notification_id": uuid.uuid4(),
        "request_id": "r-1",
        "notification_type": Channel.EMAIL,
        "user_id": uuid.uuid4(),
        "template_code": "welcome",
        "created_at": datetime.now(UTC),
    }
    return NotificationMessage(**(values | overrides))


@pytest.fixture(params=["classic", "quorum"])
def queue_type(request) -> QueueType:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def broker(amqp_url, queue_type):
    connection = await connect(amqp_url, name="test")
    channel = await connection.channel()
    await declare_topology(channel, topology(queue_type))
    await channel.close()
    publisher = ConfirmedPublisher(connection, confirm_timeout=5)
    await publisher.open()
    yield connection, publisher
    await publisher.close()
    await connection.close()


async def publish(publisher: ConfirmedPublisher, message: NotificationMessage, priority: int = 0):
    await publisher.publish(
        exchange=DIRECT_EXCHANGE,
        routing_key=message.notification_type.value,
        body=message.to_bytes(),
        message_id=str(message.notification_id),
        priority=priority,
    )


def consumer_for(connection, publisher, handler, prefetch=10) -> QueueConsumer[NotificationMessage]:
    return QueueConsumer(
        connection=connection,
        publisher=publisher,
        queue="email.queue",
        parse=NotificationMessage.from_bytes,
        handler=handler,
        service="test",
        prefetch=prefetch,
        retry_policy=POLICY,
        delay_queue=partial(delay_queue, Channel.EMAIL),
    )


def recording_consumer(
    connection, publisher, prefetch=10
) -> tuple[QueueConsumer[NotificationMessage], list[str]]:
    """A consumer that acks everything and records the notification ids it took, in order."""
    seen: list[str] = []

    async def handler(delivery):
        seen.append(str(delivery.message.notification_id))
        return Ack()

    return consumer_for(connection, publisher, handler, prefetch), seen


async def eventually(condition, tries: int = 200) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.05)


async def test_declaring_the_topology_twice_never_fails(broker, queue_type):
    connection, _ = broker
    channel = await connection.channel()
    await declare_topology(channel, topology(queue_type))
    await channel.close()
    names = {q.name for q in topology(queue_type).queues}
    assert {"email.queue", "push.queue", "failed.queue", "email.delay.100"} <= names
    for name in names:
        assert await queue_depth(connection, name) == 0


async def test_unroutable_publish_is_an_error_not_a_silent_drop(broker):
    _, publisher = broker
    with pytest.raises(PublishFailed):
        await publisher.publish(
            exchange=DIRECT_EXCHANGE, routing_key="nowhere", body=b"{}", message_id="x"
        )


async def test_acked_message_leaves_the_queue(broker):
    connection, publisher = broker
    seen: list[Delivery[NotificationMessage]] = []

    async def handler(delivery):
        seen.append(delivery)
        return Ack()

    consumer = consumer_for(connection, publisher, handler)
    await consumer.start()
    await publish(publisher, make_message())
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.05)
    await consumer.stop()
    assert len(seen) == 1
    assert seen[0].attempts == 0
    assert await queue_depth(connection, "email.queue") == 0


async def test_transient_failures_retry_through_delay_queues_then_dead_letter(broker):
    connection, publisher = broker
    attempts: list[int] = []

    async def handler(delivery):
        attempts.append(delivery.attempts)
        return Retry(error="smtp down", error_class="TransientProviderError")

    consumer = consumer_for(connection, publisher, handler)
    await consumer.start()
    message = make_message()
    await publish(publisher, message)
    failed = await get_one(connection, FAILED_QUEUE, timeout=10)
    await consumer.stop()
    assert attempts == [0, 1, 2]  # first delivery + 2 retries configured
    assert failed.message_id == str(message.notification_id)
    assert failed.headers[H.FAILURE_REASON] == "retries_exhausted"
    assert failed.headers[H.FAILURE_ERROR] == "smtp down"
    assert failed.headers[H.FAILURE_SERVICE] == "test"
    assert failed.headers[H.ATTEMPTS] == 2
    assert NotificationMessage.from_bytes(failed.body) == message


async def test_unparseable_message_goes_straight_to_failed_queue(broker):
    connection, publisher = broker
    calls: list[object] = []

    async def handler(delivery):
        calls.append(delivery)
        return Ack()

    consumer = consumer_for(connection, publisher, handler)
    await consumer.start()
    await publish_raw(connection, DIRECT_EXCHANGE, "email", b"not json", message_id="poison")
    failed = await get_one(connection, FAILED_QUEUE, timeout=5)
    await consumer.stop()
    assert calls == []
    assert failed.body == b"not json"
    assert failed.headers[H.FAILURE_REASON] == "invalid_message"


async def test_schema_violation_is_invalid_message(broker):
    connection, publisher = broker
    consumer = consumer_for(connection, publisher, lambda d: asyncio.sleep(0, Ack()))
    await consumer.start()
    await publish_raw(connection, DIRECT_EXCHANGE, "email", b'{"notification_id": "nope"}')
    failed = await get_one(connection, FAILED_QUEUE, timeout=5)
    await consumer.stop()
    assert failed.headers[H.FAILURE_REASON] == "invalid_message"
    assert "notification_id" in str(failed.headers[H.FAILURE_ERROR])


async def test_permanent_failure_dead_letters_at_once_with_reason(broker):
    connection, publisher = broker
    calls = 0

    async def handler(delivery):
        nonlocal calls
        calls += 1
        return DeadLetter(
            "permanent_error", "550 mailbox unavailable", "PermanentProviderError", provider="smtp"
        )

    consumer = consumer_for(connection, publisher, handler)
    await consumer.start()
    await publish(publisher, make_message())
    failed = await get_one(connection, FAILED_QUEUE, timeout=5)
    await consumer.stop()
    assert calls == 1
    assert failed.headers[H.FAILURE_REASON] == "permanent_error"
    assert failed.headers[H.FAILURE_ERROR_CLASS] == "PermanentProviderError"
    assert failed.headers[H.FAILURE_PROVIDER] == "smtp"


async def test_handler_crash_is_retried_not_lost(broker):
    connection, publisher = broker
    calls = 0

    async def handler(delivery):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return Ack()

    consumer = consumer_for(connection, publisher, handler)
    await consumer.start()
    await publish(publisher, make_message())
    for _ in range(100):
        if calls >= 2:
            break
        await asyncio.sleep(0.05)
    await consumer.stop()
    assert calls == 2
    assert await queue_depth(connection, FAILED_QUEUE) == 0


async def test_claim_waits_do_not_spend_attempts(broker):
    connection, publisher = broker
    seen: list[tuple[int, int]] = []

    async def handler(delivery):
        seen.append((delivery.attempts, delivery.waits))
        if len(seen) < 3:
            return Retry(error="claimed elsewhere", count_attempt=False)
        return Ack()

    consumer = consumer_for(connection, publisher, handler)
    await consumer.start()
    await publish(publisher, make_message())
    for _ in range(100):
        if len(seen) >= 3:
            break
        await asyncio.sleep(0.05)
    await consumer.stop()
    assert seen == [(0, 0), (0, 1), (0, 2)]


async def publish_backlog_then_urgent(publisher) -> tuple[list[str], str]:
    backlog = [make_message() for _ in range(200)]
    for message in backlog:  # one at a time: the publish order is the queue order
        await publish(publisher, message, priority=0)
    urgent = make_message()
    await publish(publisher, urgent, priority=9)
    return [str(m.notification_id) for m in backlog], str(urgent.notification_id)


async def consume_all(connection, publisher, count: int) -> list[str]:
    consumer, order = recording_consumer(connection, publisher, prefetch=1)
    await consumer.start()
    await eventually(lambda: len(order) >= count)
    await consumer.stop()
    return order


@pytest.mark.parametrize("queue_type", ["classic"], indirect=True)
async def test_high_priority_overtakes_a_backlog(broker):
    connection, publisher = broker
    backlog, urgent = await publish_backlog_then_urgent(publisher)
    order = await consume_all(connection, publisher, len(backlog) + 1)
    assert order[0] == urgent
    assert len(order) == 201


@pytest.mark.parametrize("queue_type", ["quorum"], indirect=True)
async def test_quorum_queues_keep_every_prioritised_message(broker):
    """Quorum queues know priorities only from RabbitMQ 3.13 (two levels: 0-4 and 5+); on older
    brokers (3.10 here) the priority is accepted and ignored, so the urgent message waits its
    turn. Both ways, nothing is lost or delivered twice; the order is what the broker supports."""
    connection, publisher = broker
    backlog, urgent = await publish_backlog_then_urgent(publisher)
    order = await consume_all(connection, publisher, len(backlog) + 1)
    assert sorted(order) == sorted([*backlog, urgent])
    version = connection.transport.connection.server_properties["version"]
    major, minor = (int(part) for part in str(version).split(".")[:2])
    if (major, minor) >= (3, 13):
        assert order[0] == urgent
    else:
        assert order == [*backlog, urgent]


async def test_stop_finishes_in_flight_work_and_leaves_the_rest_queued(broker):
    connection, publisher = broker
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    async def handler(delivery):
        started.set()
        await release.wait()
        finished.append(str(delivery.message.notification_id))
        return Ack()

    consumer = consumer_for(connection, publisher, handler, prefetch=1)
    await consumer.start()
    for _ in range(5):
        await publish(publisher, make_message())
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(consumer.stop(timeout=10))
    await asyncio.sleep(0.2)
    assert not stopping.done()  # waits for the in-flight message
    release.set()
    await stopping
    assert len(finished) == 1
    assert await queue_depth(connection, "email.queue") == 4


async def test_dead_letter_exchange_routes_rejects_to_failed_queue(broker):
    """Anything the broker itself dead-letters from a work queue lands in failed.queue."""
    connection, _ = broker
    channel = await connection.channel()
    queue = await channel.get_queue("email.queue", ensure=False)
    await publish_raw(connection, DIRECT_EXCHANGE, "email", b"{}", message_id="rejected")
    for _ in range(50):
        message = await queue.get(no_ack=False, fail=False)
        if message:
            await message.reject(requeue=False)
            break
        await asyncio.sleep(0.05)
    await channel.close()
    failed = await get_one(connection, FAILED_QUEUE, timeout=5)
    assert failed.message_id == "rejected"
    assert DEAD_LETTER_EXCHANGE == "notifications.dlx"


async def test_consumer_resumes_by_itself_after_the_connection_is_cut(broker, amqp_url):
    from tests.support.proxy import TcpProxy

    _, publisher = broker
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    vhost = amqp_url.rsplit("/", 1)[1]
    proxied = await connect(f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}", name="proxied")
    consumer, seen = recording_consumer(proxied, publisher)
    await consumer.start()
    try:
        await publish(publisher, make_message())
        await eventually(lambda: bool(seen), tries=100)
        await proxy.cut()
        await eventually(lambda: not consumer.consuming, tries=40)
        assert not consumer.consuming  # readiness tells the truth while cut
        await proxy.restore()
        after = make_message()
        await publish(publisher, after)
        await eventually(lambda: str(after.notification_id) in seen)
        assert str(after.notification_id) in seen
        assert consumer.consuming
    finally:
        await consumer.stop(timeout=2)
        await proxied.close()
        await proxy.close()


async def test_requeue_gives_the_message_back_untouched(broker):
    connection, publisher = broker
    seen: list[bool] = []

    async def handler(delivery):
        seen.append(delivery.redelivered)
        return Requeue() if len(seen) == 1 else Ack()

    consumer = consumer_for(connection, publisher, handler)
    await consumer.start()
    await publish(publisher, make_message())
    for _ in range(100):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.05)
    await consumer.stop()
    assert seen == [False, True]  # the same message came back from the broker, not a copy
    assert await queue_depth(connection, FAILED_QUEUE) == 0


async def test_the_failed_queue_consumer_parks_instead_of_dead_lettering_to_itself(broker):
    connection, publisher = broker

    async def unstorable(delivery):
        return DeadLetter("unstorable", "DataError: value out of range", "Unstorable")

    consumer = QueueConsumer(
        connection=connection,
        publisher=publisher,
        queue=FAILED_QUEUE,
        parse=lambda body: body,
        handler=unstorable,
        service="dlq_service",
        dead_letter_routing_key=PARKED_ROUTING_KEY,
    )
    await consumer.start()
    await publisher.publish(
        exchange=DEAD_LETTER_EXCHANGE, routing_key="failed", body=b"{}", message_id="odd"
    )
    parked = await get_one(connection, PARKED_QUEUE, timeout=5)
    await consumer.stop()
    assert parked.message_id == "odd"
    assert parked.headers[H.FAILURE_REASON] == "unstorable"
    assert await queue_depth(connection, FAILED_QUEUE) == 0


async def test_a_retry_is_not_dropped_when_its_work_queue_cannot_take_it(broker, amqp_url):
    """Delay queues dead-letter at least once: a message whose delay ends while its work queue
    cannot take it (here: unbound) is held by the broker for dead-lettering, not dropped, as a
    classic queue would (the broker hands it on when it retries; it does so every few minutes)."""
    connection, publisher = broker
    amqp_channel = await connection.channel()
    exchange = await amqp_channel.get_exchange(DIRECT_EXCHANGE)
    work = await amqp_channel.declare_queue("email.queue", passive=True)
    await work.unbind(exchange, routing_key="email")
    message = make_message()
    delay = delay_queue(Channel.EMAIL, 100)
    await publisher.publish(
        exchange="",
        routing_key=delay,
        body=message.to_bytes(),
        message_id=str(message.notification_id),
        expiration_ms=50,
    )
    await asyncio.sleep(1.0)  # long expired, with nowhere to go
    vhost = amqp_url.rsplit("/", 1)[1]
    held = await asyncio.to_thread(_queue_info, vhost, delay)
    assert held == {"messages": 0, "messages_dlx": 1}
    await work.bind(exchange, routing_key="email")
    await amqp_channel.close()


def _queue_info(vhost: str, queue: str) -> dict[str, int]:
    """Counters the broker keeps for a queue (messages_dlx: held for dead-lettering)."""
    expression = (
        f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"{vhost}">>, queue, <<"{queue}">>)), '
        "rabbit_amqqueue:info(Q, [messages, messages_dlx])."
    )
    out = subprocess.run(
        ["rabbitmqctl", "-q", "eval", expression], capture_output=True, text=True, check=True
    ).stdout
    return {name: int(n) for name, n in re.findall(r"\{(\w+),(\d+)\}", out)}


def test_rabbitmq_url_may_name_every_node_of_a_cluster():
    urls = broker_urls("amqp://u:p@a:5672/v, amqp://u:p@b:5673/v,")
    assert [(u.host, u.port, u.path) for u in urls] == [("a", 5672, "/v"), ("b", 5673, "/v")]
    with pytest.raises(ValueError, match="names no broker"):
        broker_urls(" , ")


async def test_connect_skips_a_node_that_does_not_answer(amqp_url):
    vhost = amqp_url.rsplit("/", 1)[1]
    connection = await connect(f"amqp://guest:guest@127.0.0.1:1/{vhost},{amqp_url}", name="t")
    try:
        assert connection.node == "127.0.0.1:5672"
    finally:
        await connection.close()


@pytest.mark.parametrize("queue_type", ["quorum"], indirect=True)
async def test_a_consumer_moves_to_the_next_node_when_its_node_goes_away(broker, amqp_url):
    """Two "nodes" (proxies to the one broker): the first goes away for good; the consumer's
    connection moves to the second by itself and consuming resumes."""
    from tests.support.proxy import TcpProxy

    _, publisher = broker
    first = await TcpProxy("127.0.0.1", 5672).start()
    second = await TcpProxy("127.0.0.1", 5672).start()
    vhost = amqp_url.rsplit("/", 1)[1]
    nodes = ",".join(
        f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}" for proxy in (first, second)
    )
    connection = await connect(nodes, name="two-nodes")
    consumer, seen = recording_consumer(connection, publisher)
    await consumer.start()
    try:
        assert connection.node == f"127.0.0.1:{first.port}"
        await first.cut()  # and never restored
        after = make_message()
        await publish(publisher, after)
        await eventually(lambda: str(after.notification_id) in seen)
        assert str(after.notification_id) in seen
        assert connection.node == f"127.0.0.1:{second.port}"
        assert consumer.consuming
    finally:
        await consumer.stop(timeout=2)
        await connection.close()
        await first.close()
        await second.close()


async def test_work_in_flight_finishes_when_the_connection_drops(broker, amqp_url):
    """aiormq cancels a consumer's callbacks when their channel closes. A send past its point of
    no return must not stop half-way: its send claim would be released and the redelivered
    message sent again. The work finishes; its ack fails quietly; the redelivery is the broker's."""
    from tests.support.proxy import TcpProxy

    _, publisher = broker
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    vhost = amqp_url.rsplit("/", 1)[1]
    proxied = await connect(f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}", name="proxied")
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def handler(delivery):
        started.set()
        await release.wait()
        finished.append(delivery.redelivered)
        return Ack()

    consumer = consumer_for(proxied, publisher, handler)
    await consumer.start()
    try:
        await publish(publisher, make_message())
        await asyncio.wait_for(started.wait(), 5)
        await proxy.cut()
        await eventually(lambda: not consumer.consuming, tries=40)
        release.set()
        await eventually(lambda: bool(finished), tries=40)
        assert finished == [False]  # the first delivery's work ran to its end
        await proxy.restore()
        await eventually(lambda: len(finished) == 2)
        assert finished == [False, True]  # unacked, so the broker delivered it again
    finally:
        await consumer.stop(timeout=2)
        await proxied.close()
        await proxy.close()


async def test_a_nacked_publish_fails_and_the_next_one_goes_out_on_a_fresh_channel(broker):
    """A nack is a publish the broker refused (here: a full queue that rejects new messages);
    the publisher answers PublishFailed and replaces the channel (see _renew_after_nack)."""
    connection, publisher = broker
    channel = await connection.channel()
    await channel.declare_queue(
        "full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await channel.close()
    first_channel = publisher._amqp_channel
    with pytest.raises(PublishFailed, match="Nack"):
        await publisher.publish(exchange="", routing_key="full", body=b"{}", message_id="x")
    assert publisher._amqp_channel is not first_channel
    await publish(publisher, make_message())  # the fresh channel confirms
    assert await queue_depth(connection, "email.queue") == 1


async def test_publish_many_confirms_each_message_with_its_own_properties(broker):
    """A batch is written as one piece and confirmed per message; each message keeps its own
    id, priority and correlation id, and one larger than a frame arrives whole."""
    connection, publisher = broker
    headers = {H.ATTEMPTS: 0, "x-note": "shared"}
    messages = [
        OutgoingMessage(
            DIRECT_EXCHANGE,
            "email",
            make_message(request_id=f"r-{n}").to_bytes(),
            f"id-{n}",
            f"corr-{n}",
            headers,
            n % 11,
        )
        for n in range(300)
    ]
    large = make_message(variables={"blob": "x" * 400_000}).to_bytes()  # over frame_max (128 KB)
    messages.append(OutgoingMessage(DIRECT_EXCHANGE, "push", large, "large", None, None, 0))
    assert await publisher.publish_many(messages) == [None] * 301
    assert await queue_depth(connection, "email.queue") == 300
    got = await get_one(connection, "push.queue")
    assert (got.body, got.message_id, got.correlation_id) == (large, "large", None)
    assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    seen: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}
    for _ in range(300):
        one = await get_one(connection, "email.queue")
        seen[str(one.message_id)] = one
    assert sorted(seen) == sorted(f"id-{n}" for n in range(300))
    for n in (0, 7, 299):
        one = seen[f"id-{n}"]
        assert one.body == messages[n].body
        assert (one.correlation_id, one.priority) == (f"corr-{n}", n % 11)
        assert {k: one.headers[k] for k in headers} == headers  # (quorum adds its count)
        assert one.content_type == "application/json"
        assert one.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert one.timestamp is not None


async def test_publish_many_fails_only_the_message_nobody_takes(broker):
    """An unroutable message in a batch is returned (mandatory) and fails alone; a refused one
    (nack) fails alone and the channel is replaced; the rest are confirmed."""
    connection, publisher = broker
    channel = await connection.channel()
    await channel.declare_queue(
        "full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await channel.close()
    body = make_message().to_bytes()
    outcomes = await publisher.publish_many(
        [
            OutgoingMessage(DIRECT_EXCHANGE, "email", body, "a"),
            OutgoingMessage(DIRECT_EXCHANGE, "no-such-route", body, "b"),
            OutgoingMessage("", "full", body, "c"),
            OutgoingMessage(DIRECT_EXCHANGE, "email", body, "d"),
        ]
    )
    assert outcomes[0] is None
    assert outcomes[3] is None
    assert isinstance(outcomes[1], PublishFailed)
    assert "Return" in str(outcomes[1].__cause__)
    assert isinstance(outcomes[2], PublishFailed)
    assert "Nack" in repr(outcomes[2].__cause__)
    assert await queue_depth(connection, "email.queue") == 2
    assert await publisher.publish_many([OutgoingMessage(DIRECT_EXCHANGE, "email", body, "e")]) == [
        None
    ]


async def test_publish_many_fails_every_message_when_the_broker_is_away(amqp_url, queue_type):
    """The connection cut while a batch waits for its confirms: every message not confirmed is
    answered PublishFailed as soon as the channel is known lost (before the confirm timeout),
    and none is reported confirmed that the broker did not take; with the connection down, a
    batch fails within the confirm timeout."""
    from tests.support.proxy import TcpProxy

    proxy = await TcpProxy("127.0.0.1", 5672).start()
    vhost = amqp_url.rsplit("/", 1)[1]
    connection = await connect(f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}", name="cut")
    channel = await connection.channel()
    await declare_topology(channel, topology(queue_type))
    await channel.close()
    publisher = ConfirmedPublisher(connection, confirm_timeout=3)
    await publisher.open()
    body = make_message().to_bytes()
    loop = asyncio.get_running_loop()
    try:
        # cut while the confirms of a large batch are on their way
        assert publisher._amqp_channel is not None
        underlay = cast(aiormq.Channel, await publisher._amqp_channel.get_underlay_channel())
        batch = [OutgoingMessage(DIRECT_EXCHANGE, "email", body, f"m-{n}") for n in range(3000)]
        started = loop.time()
        publishing = asyncio.ensure_future(publisher.publish_many(batch))
        while underlay.delivery_tag < len(batch):
            await asyncio.sleep(0)
        await proxy.cut()
        outcomes = await publishing
        assert loop.time() - started < 2.5
        failed = [outcome for outcome in outcomes if outcome is not None]
        assert failed, "the cut came after every confirm: nothing was waiting"
        assert all("channel closed" in str(outcome) for outcome in failed)
        confirmed = len(outcomes) - len(failed)
        await proxy.restore()
        direct = await connect(amqp_url, name="count")
        try:  # whatever was reported confirmed is in the queue
            assert await queue_depth(direct, "email.queue") >= confirmed
        finally:
            await direct.close()
        # and while the connection is down, a new batch fails within the confirm timeout
        await proxy.cut()
        started = loop.time()
        outcomes = await publisher.publish_many(batch[:50])
        assert loop.time() - started < 4.5
        assert all(isinstance(outcome, PublishFailed) for outcome in outcomes)
    finally:
        await proxy.restore()
        await publisher.close()
        await connection.close()
        await proxy.close()
