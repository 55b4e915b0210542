"""The command line as an operator runs it: a separate process talking to dlq_service over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from dlq_service.app import create_app
from dlq_service.config import DlqSettings
from libs.messaging.topology import work_queue
from libs.notification.message import Channel
from tests.dlq_service.conftest import TokenFactory
from tests.dlq_service.helpers import (
    eventually,
    failure_headers,
    notification,
    publish_failed,
    queue_depth,
)
from tests.support.cli import herald_dlq
from tests.support.servers import live_server


@dataclass
class Cli:
    url: str
    token: str

    async def __call__(self, *args: str, token: str | None = None) -> tuple[int, str, str]:
        env = {"HERALD_DLQ_URL": self.url, "HERALD_TOKEN": self.token if token is None else token}
        return await herald_dlq(env, *args, timeout=60)

    async def stored(self, n: int) -> None:
        async def count() -> bool:
            async with httpx.AsyncClient() as http:
                response = await http.get(
                    f"{self.url}/api/v1/failed/",
                    params={"state": "all"},
                    headers={"Authorization": f"Bearer {self.token}"},
                )
            return bool(response.json()["meta"]["total"] == n)

        await eventually(count, timeout=15, interval=0.1)


@pytest.fixture
async def cli(
    settings_factory: Callable[..., DlqSettings], token_factory: TokenFactory
) -> AsyncIterator[Cli]:
    async with live_server(create_app(settings_factory())) as url:
        yield Cli(url, token_factory("admin", sub="admin-alice"))


async def _fail(amqp: AbstractRobustConnection, reason: str = "retries_exhausted") -> str:
    message = notification()
    await publish_failed(
        amqp,
        message.to_bytes(),
        failure_headers(reason=reason, error=f"{reason}: 451 try later"),
        message_id=str(message.notification_id),
    )
    return str(message.notification_id)


async def _ids(cli: Cli) -> dict[str, str]:
    """notification id -> failed message id, of every stored failure."""
    async with httpx.AsyncClient() as http:
        rows = (
            await http.get(
                f"{cli.url}/api/v1/failed/",
                params={"state": "all", "limit": 100},
                headers={"Authorization": f"Bearer {cli.token}"},
            )
        ).json()["data"]
    return {row["notification_id"]: row["id"] for row in rows}


async def test_list_show_discard_and_stats_read_as_tables(
    cli: Cli, amqp: AbstractRobustConnection
) -> None:
    first = await _fail(amqp)
    second = await _fail(amqp, "permanent_error")
    await cli.stored(2)
    ids = await _ids(cli)

    code, out, _ = await cli("list")
    assert code == 0
    assert ids[first] in out
    assert ids[second] in out
    assert "Retries exhausted" in out
    assert "Refused for good" in out
    assert "2 of 2 shown" in out

    code, out, _ = await cli("list", "--reason", "permanent_error")
    assert ids[second] in out
    assert ids[first] not in out

    code, out, _ = await cli("show", ids[first], "--full")
    assert code == 0
    for shown in ("Retries exhausted", "Every attempt failed", "Audit trail", "received"):
        assert shown in out
    assert first in out  # the payload

    code, out, _ = await cli("discard", ids[second], "--reason", "duplicate of a resent mail")
    assert code == 0
    assert f"Discarded {ids[second]}" in out
    code, out, _ = await cli("show", ids[second])
    assert "duplicate of a resent mail" in out
    assert "admin-alice" in out

    code, out, _ = await cli("stats")
    assert code == 0
    assert "1 pending of 2 stored" in out

    code, out, _ = await cli("health")
    assert code == 0
    assert "smtp" in out
    assert "closed" in out
    assert "email.queue" in out


async def test_republish_by_filter_counts_asks_and_reports_the_total(
    cli: Cli, amqp: AbstractRobustConnection
) -> None:
    for _ in range(5):
        await _fail(amqp)
    await _fail(amqp, "permanent_error")
    await cli.stored(6)

    code, _, err = await cli("republish", "--reason", "retries_exhausted")
    assert code == 1
    assert "pass --yes" in err  # no terminal to ask on: nothing done without --yes
    assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 0

    code, out, err = await cli(
        "republish", "--reason", "retries_exhausted", "--yes", "--page-size", "2"
    )
    assert code == 0, err
    assert "Republished 5 of 5." in out
    assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 5

    code, out, _ = await cli("republish", "--reason", "retries_exhausted", "--yes")
    assert code == 0
    assert "Nothing to republish" in out


async def test_republish_by_ids(cli: Cli, amqp: AbstractRobustConnection) -> None:
    for _ in range(3):
        await _fail(amqp)
    await cli.stored(3)
    ids = list((await _ids(cli)).values())
    code, out, _ = await cli("republish", ids[0])
    assert (code, out.strip()) == (0, "Republished 1 of 1.")
    code, out, _ = await cli("republish", *ids)
    assert code == 0
    assert "Republished 2 of 3; 1 skipped" in out
    assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 3


async def test_without_a_token_or_with_a_bad_one_it_says_what_to_do(cli: Cli) -> None:
    code, _, err = await cli("list", token="")
    assert code == 1
    assert "HERALD_TOKEN" in err
    code, _, err = await cli("stats", token="not-a-token")
    assert code == 1
    assert "invalid_token" in err
