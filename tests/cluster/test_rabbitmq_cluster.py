"""A real three-node RabbitMQ cluster with quorum queues: the node that leads ``email.queue``
stops in the middle of a burst, and nothing accepted is lost or sent twice.

Cost: about 1.5-2.5 minutes on two cores (13 s to boot and join the three nodes, the whole system
as separate processes, 2,000 notifications through quorum queues replicated three ways, a leader
election, then teardown). It is part of ``make test`` (marker ``cluster``; ``make test-cluster``
runs it alone); each run appends its figures to ``.run/chaos-results.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from libs.messaging.topology import DIRECT_EXCHANGE
from tests.chaos.conftest import duplicates, report, send_burst, setup_email, wait_delivered
from tests.support import rabbit_cluster
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.servers import free_port
from tests.support.system import System, running_system

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not rabbit_cluster.available(), reason="RabbitMQ is not installed"),
]

BURST = 2000


async def sample(system: System, url: str, metric: str) -> float:
    """One sample of a process's /metrics (0 when the series does not exist yet)."""
    text = (await system.http.get(f"{url}/metrics")).text
    found = re.search(rf"^{re.escape(metric)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def log_lines(process) -> list[dict[str, object]]:
    text = process.log_path.read_text(errors="replace") if process.log_path else ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
async def cluster(tmp_path):
    nodes = RabbitCluster(tmp_path / "rabbitmq")
    try:
        timings = await asyncio.to_thread(nodes.start)
        nodes.timings = timings  # type: ignore[attr-defined]
        yield nodes
    finally:
        await asyncio.to_thread(nodes.close)


async def test_leader_node_stops_mid_burst_and_every_accepted_notification_is_delivered_once(
    vhost_pool, tmp_path, cluster
):
    env = {"RABBITMQ_URL": cluster.urls(), "QUEUE_TYPE": "quorum", "CONSUMER_PREFETCH": "20"}
    async with running_system(vhost_pool, tmp_path, env=env) as system:
        replicas = [system.stack.start("email_service", port=free_port()) for _ in range(2)]
        for replica in replicas:
            await asyncio.to_thread(system.stack.wait_ready, replica)
        consumers = system.stack.find("email_service")
        [gateway] = system.stack.find("gateway")
        assert len(consumers) == 3
        user_id, code = await setup_email(system)

        # Every client lists node 1 first and declared the queues there, so node 1 leads them.
        leader = await asyncio.to_thread(cluster.queue_leader, "email.queue")
        assert leader is cluster.nodes[0], leader.name
        sending = asyncio.create_task(
            send_burst(system, user_id=user_id, template_code=code, count=BURST, concurrency=40)
        )
        while len(system.sink.handler.mails) < BURST // 5:
            await asyncio.sleep(0.02)
        delivered_before_stop = len(system.sink.handler.mails)
        stop_started = time.monotonic()
        await asyncio.to_thread(cluster.stop_node, leader)
        stopped_at = time.monotonic()
        burst = await sending
        done = await wait_delivered(system, burst.accepted, timeout=300)

        # After the failover: the same gateway accepts and the consumers deliver again.
        after = await system.send(
            notification_type="email", user_id=user_id, template_code=code, variables={"name": "x"}
        )
        assert after.status_code == 202, after.text
        last = await system.wait_status(after.json()["data"]["notification_id"], "delivered")
        new_leader = await asyncio.to_thread(cluster.queue_leader, "email.queue")

        confirmed = await sample(
            system,
            gateway.url,
            f'messages_published_total{{exchange="{DIRECT_EXCHANGE}",routing_key="email"}}',
        )
        sent_by = [
            await sample(system, p.url, 'provider_sends_total{provider="smtp",result="sent"}')
            for p in consumers
        ]
        counts = system.sink.handler.counts()
        report_figures = {
            "accepted": len(burst.accepted),
            "refused": burst.refused,
            "cut_off": burst.errors,
            "delivered_unique": len(counts),
            "duplicates": duplicates(system),
            "delivered_before_stop": delivered_before_stop,
            "seconds_to_stop_the_node": round(stopped_at - stop_started, 2),
            "seconds_from_stop_to_all_delivered": round(done - stopped_at, 2),
            "sends_per_consumer": [int(n) for n in sent_by],
            "gateway_confirms": int(confirmed),
            "leader_before": leader.name,
            "leader_after": new_leader.name,
            **cluster.timings,
        }
        report("cluster_leader_stop_mid_burst", **report_figures)

        # every 202 delivered exactly once; nothing (202 or not) delivered twice
        assert set(burst.accepted) <= set(counts)
        assert duplicates(system) == 0
        # no 202 without a confirm: the gateway counts a publish only once the broker confirmed
        # it, and answered 202 for exactly those (the last one is the check after the failover)
        assert confirmed == len(burst.accepted) + 1
        assert last["status"] == "delivered"
        # the three replicas shared the work, and no mail was sent by two of them
        assert all(n > 0 for n in sent_by), sent_by
        assert sum(sent_by) == sum(counts.values())
        # the queue has a new leader; the clients moved to a surviving node by themselves: the
        # same processes, never restarted, each logged its reconnection to another node
        assert new_leader is not leader
        for process in [gateway, *consumers]:
            assert process.alive
            moved_to = [
                line["node"]
                for line in log_lines(process)
                if line.get("event") == "amqp.reconnected"
            ]
            assert moved_to, f"{process.name}:{process.port} never reconnected"
            assert f"127.0.0.1:{leader.port}" not in moved_to
