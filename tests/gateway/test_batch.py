"""POST /api/v1/notifications/batch: each item answered as it would be alone, nothing reported
accepted that the broker did not confirm, idempotency per item."""

from __future__ import annotations

import uuid

from gateway.app import create_app
from tests.gateway.test_send import body
from tests.support.amqp import queue_depth
from tests.support.proxy import TcpProxy
from tests.support.servers import app_client

BATCH = "/api/v1/notifications/batch"


def batch(*items: dict[str, object]) -> dict[str, object]:
    return {"notifications": list(items)}


async def test_every_item_accepted_is_202_and_each_is_queued_once(gateway, mint, amqp):
    items = [body() for _ in range(5)] + [body(notification_type="push")]
    response = await gateway.post(BATCH, json=batch(*items), headers=mint.headers("service"))
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert (data["accepted"], data["replayed"], data["refused"]) == (6, 0, 0)
    assert [item["index"] for item in data["items"]] == list(range(6))
    assert [item["request_id"] for item in data["items"]] == [i["request_id"] for i in items]
    assert {item["outcome"] for item in data["items"]} == {"accepted"}
    assert len({item["notification_id"] for item in data["items"]}) == 6
    assert await queue_depth(amqp, "email.queue") == 5
    assert await queue_depth(amqp, "push.queue") == 1
    # each one has its status, as a single request's would
    first = data["items"][0]["notification_id"]
    status = await gateway.get(f"/api/v1/notifications/{first}", headers=mint.headers("service"))
    assert status.status_code == 200
    assert status.json()["data"]["status"] == "pending"


async def test_a_bad_item_is_refused_with_its_reason_and_the_others_go_on(gateway, mint, amqp):
    good = [body(), body()]
    bad = body(priority=99)
    no_user = body()
    del no_user["user_id"]
    response = await gateway.post(
        BATCH, json=batch(good[0], bad, no_user, good[1]), headers=mint.headers("service")
    )
    assert response.status_code == 207, response.text
    envelope = response.json()
    data = envelope["data"]
    assert (data["accepted"], data["refused"]) == (2, 2)
    assert envelope["message"] == "2 accepted, 0 replayed, 2 refused."
    outcomes = [item["outcome"] for item in data["items"]]
    assert outcomes == ["accepted", "refused", "refused", "accepted"]
    priority_error = data["items"][1]["error"]
    assert priority_error["status"] == 422
    assert priority_error["code"] == "validation_error"
    assert priority_error["details"]["errors"][0]["field"] == "priority"
    assert data["items"][1]["request_id"] == bad["request_id"]
    assert data["items"][2]["error"]["details"]["errors"][0]["field"] == "user_id"
    assert data["items"][1]["notification_id"] is None
    assert await queue_depth(amqp, "email.queue") == 2


async def test_idempotency_holds_per_item_across_batches_and_within_one(gateway, mint, amqp):
    headers = mint.headers("service", sub="shop")
    items = [body() for _ in range(3)]
    first = await gateway.post(BATCH, json=batch(*items), headers=headers)
    assert first.status_code == 202
    again = await gateway.post(BATCH, json=batch(*items), headers=headers)
    assert again.status_code == 202
    data = again.json()["data"]
    assert (data["accepted"], data["replayed"]) == (0, 3)
    ids = [item["notification_id"] for item in first.json()["data"]["items"]]
    assert [item["notification_id"] for item in data["items"]] == ids
    # the same request_id with another body is a conflict, as it is for a single request
    changed = {**items[0], "priority": 9}
    repeated = body()  # twice in one batch: published once, the second is a replay
    mixed = await gateway.post(BATCH, json=batch(changed, repeated, repeated), headers=headers)
    assert mixed.status_code == 207
    answers = mixed.json()["data"]["items"]
    assert answers[0]["outcome"] == "refused"
    assert answers[0]["error"]["status"] == 409
    assert answers[0]["error"]["code"] == "idempotency_conflict"
    assert sorted(a["outcome"] for a in answers[1:]) == ["accepted", "replayed"]
    assert answers[1]["notification_id"] == answers[2]["notification_id"]
    # and a single request with a batch item's request_id replays the batch's answer
    single = await gateway.post("/api/v1/notifications/", json=items[1], headers=headers)
    assert single.status_code == 202
    assert single.headers["idempotent-replayed"] == "true"
    assert single.json()["data"]["notification_id"] == ids[1]
    assert await queue_depth(amqp, "email.queue") == 4


async def test_items_the_broker_did_not_take_are_refused_and_leave_nothing(
    gateway, mint, amqp, redis, gateway_settings
):
    channel = await amqp.channel()
    await channel.queue_delete("push.queue")  # push messages are now unroutable
    await channel.close()
    emails = [body(), body()]
    pushes = [body(notification_type="push"), body(notification_type="push")]
    response = await gateway.post(
        BATCH, json=batch(emails[0], pushes[0], emails[1], pushes[1]), headers=mint.headers()
    )
    assert response.status_code == 207, response.text
    items = response.json()["data"]["items"]
    assert [item["outcome"] for item in items] == ["accepted", "refused", "accepted", "refused"]
    for item in (items[1], items[3]):
        assert item["error"]["status"] == 503
        assert item["error"]["code"] == "broker_unavailable"
        assert item["notification_id"] is None
    assert await queue_depth(amqp, "email.queue") == 2
    # refused items left no status record and no idempotency record: a retry may take the id
    prefix = gateway_settings.redis_key_prefix
    statuses = [k async for k in redis.scan_iter(match=f"{prefix}notif:*") if b"timeline" not in k]
    assert len(statuses) == 2


async def test_a_batch_larger_than_a_single_body_limit_is_taken(gateway, mint, amqp):
    items = [body(variables={"name": "x" * 400}) for _ in range(300)]  # about 170 KB
    response = await gateway.post(BATCH, json=batch(*items), headers=mint.headers())
    assert response.status_code == 202, response.text
    assert response.json()["data"]["accepted"] == 300
    assert await queue_depth(amqp, "email.queue") == 300


async def test_what_is_not_a_batch_is_refused_whole(gateway, mint, amqp):
    headers = mint.headers()
    cases = {
        "empty": batch(),
        "too many": batch(*[body() for _ in range(1001)]),
        "not a list": {"notifications": body()},
        "a list alone": [body()],
        "an unknown field": {**batch(body()), "extra": 1},
    }
    for name, payload in cases.items():
        response = await gateway.post(BATCH, json=payload, headers=headers)
        assert response.status_code == 422, (name, response.text)
        assert response.json()["success"] is False
    huge = batch(*[body(variables={"v": "x" * 4000}) for _ in range(600)])  # over 2 MiB
    too_big = await gateway.post(BATCH, json=huge, headers=headers)
    assert too_big.status_code == 413
    assert (await gateway.post(BATCH, json=batch(body()))).status_code == 401
    assert await queue_depth(amqp, "email.queue") == 0


async def test_the_rate_limit_counts_every_notification_of_a_batch(gateway_settings, mint, amqp):
    settings = gateway_settings.model_copy(
        update={"rate_limit_per_second": 0.5, "rate_limit_burst": 10}
    )
    async with app_client(create_app(settings)) as client:
        headers = mint.headers("service", sub=f"caller-{uuid.uuid4().hex[:6]}")
        over = await client.post(BATCH, json=batch(*[body() for _ in range(11)]), headers=headers)
        assert over.status_code == 422
        assert over.json()["error"] == "batch_too_large"
        first = await client.post(BATCH, json=batch(*[body() for _ in range(6)]), headers=headers)
        assert first.status_code == 202
        second = await client.post(BATCH, json=batch(*[body() for _ in range(6)]), headers=headers)
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1
        single = await client.post("/api/v1/notifications/", json=body(), headers=headers)
        assert single.status_code == 202  # 4 tokens were left
    assert await queue_depth(amqp, "email.queue") == 7


async def test_without_redis_a_batch_is_503_and_queues_nothing(gateway_settings, mint, amqp):
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    settings = gateway_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{proxy.port}/0"}
    )
    try:
        async with app_client(create_app(settings)) as client:
            await proxy.cut()
            response = await client.post(
                BATCH, json=batch(body(), body()), headers=mint.headers("service")
            )
            assert response.status_code == 503, response.text
            assert response.json()["success"] is False
    finally:
        await proxy.close()
    assert await queue_depth(amqp, "email.queue") == 0
