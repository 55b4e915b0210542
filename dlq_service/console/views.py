"""What the console's templates show, prepared from the domain: words for reasons, times people
read, the delivery health panel, the live feed. No HTML here (the templates escape everything)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from jinja2 import Environment

from dlq_service.delivery_health import BreakerView, QueueDepth
from dlq_service.failures import decode_body
from dlq_service.models import BodyEncoding, FailedMessage
from dlq_service.notifications import NotificationHistory
from dlq_service.schemas import FailedListQuery, FailureFilter
from dlq_service.state import DlqState
from dlq_service.wording import ago, reason_text, reason_title, short_id, when
from libs.delivery.breaker import BreakerState
from libs.notification.status import StatusRecord

NOTICES: dict[str, str] = {
    "republished": "Republished: the message is back on its queue.",
    "discarded": "Discarded; the reason is in the audit trail.",
    "republished_many": "Republished {n} message(s).",
    "job_started": "Republishing {n} message(s) in the background; the list follows them.",
    "nothing_selected": "Nothing selected: tick the messages to republish first.",
    "expired": "The confirmation expired; count again.",
}


def explain(row: FailedMessage) -> str:
    return reason_text(row.reason)


def install_filters(env: Environment) -> None:
    env.filters.update(when=when, ago=ago, short_id=short_id, reason_title=reason_title)


def notice(params: Mapping[str, str]) -> str | None:
    template = NOTICES.get(params.get("notice", ""))
    if template is None:
        return None
    text = template.format(n=params.get("n", "?"))
    skipped = params.get("skipped")
    if skipped and skipped.isdigit():
        text += f" {skipped} skipped (no longer pending, or not republishable)."
    return text


def ids_in(text: str, most: int = 100) -> list[uuid.UUID]:
    """The failed message ids in a comma-separated list (what is not an id is ignored)."""
    ids: list[uuid.UUID] = []
    for part in text.split(",")[:most]:
        try:
            ids.append(uuid.UUID(part.strip()))
        except ValueError:
            continue
    return ids


def filter_values(query: FailedListQuery) -> dict[str, str]:
    """The filter form's current values, as strings (empty for "any")."""
    values: dict[str, str] = {}
    for name in (*FailureFilter.model_fields, "state"):
        value = getattr(query, name)
        if isinstance(value, datetime):
            values[name] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        else:
            values[name] = "" if value is None else str(getattr(value, "value", value))
    return values


def encode_filters(params: Mapping[str, str]) -> str:
    return urlencode({k: v for k, v in params.items() if v and k in FailedListQuery.model_fields})


NOTICE_PARAMS = ("notice", "n", "skipped", "watch")


def list_url(request: Request) -> str:
    """This list's path and filters, without the notice of the last action."""
    url = request.url.remove_query_params(NOTICE_PARAMS)
    return f"{url.path}?{url.query}" if url.query else url.path


def page_url(request: Request) -> Any:
    """Builds this list's URL for another page (the filters kept)."""

    def build(page: int) -> str:
        url = request.url.remove_query_params(NOTICE_PARAMS).include_query_params(page=page)
        return f"{url.path}?{url.query}"

    return build


def pretty_body(row: FailedMessage) -> str:
    """The payload as people read it: indented JSON when it is JSON, else the text (or base64)."""
    if row.body_encoding == BodyEncoding.UTF8:
        try:
            return orjson.dumps(orjson.loads(row.body), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            return row.body
    try:
        return decode_body(row.body, row.body_encoding).decode("utf-8", "replace")
    except ValueError:
        return row.body


async def statuses_of(
    history: NotificationHistory, rows: Iterable[FailedMessage]
) -> dict[str, StatusRecord]:
    """The current status of each row's notification (those the history still knows)."""
    ids = sorted({str(r.notification_id) for r in rows if r.notification_id is not None})
    records = await asyncio.gather(*(history.get(i) for i in ids))
    return {i: r for i, r in zip(ids, records, strict=True) if r is not None}


@dataclass(frozen=True)
class HealthPanel:
    breakers: Sequence[BreakerView]
    queues: Sequence[QueueDepth]
    arrivals: Sequence[tuple[datetime, int]]
    retry_waiting: dict[str, int]

    @property
    def arrivals_peak(self) -> int:
        return max((n for _, n in self.arrivals), default=0) or 1

    @property
    def last_hour(self) -> int:
        return self.arrivals[-1][1] if self.arrivals else 0

    @property
    def last_day(self) -> int:
        return sum(n for _, n in self.arrivals)

    @property
    def any_breaker_open(self) -> bool:
        return any(b.state is not BreakerState.CLOSED for b in self.breakers)


async def delivery_health(state: DlqState) -> HealthPanel:
    breakers, queues, arrivals = await asyncio.gather(
        state.probe.breakers(), state.probe.queues(), state.dlq.arrivals_per_hour(24)
    )
    waiting: dict[str, int] = {}
    for q in queues:
        if q.kind == "retry" and q.channel is not None:
            waiting[q.channel.value] = waiting.get(q.channel.value, 0) + (q.messages or 0)
    shown = [q for q in queues if q.kind != "retry"]
    return HealthPanel(breakers, shown, arrivals, waiting)


async def live_data(state: DlqState, ids: Sequence[uuid.UUID]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    present = await state.dlq.get_many(ids)
    statuses = await statuses_of(state.history, present)
    for row in present:
        record = statuses.get(str(row.notification_id))
        rows[str(row.id)] = {
            "state": row.state,
            "republish_count": row.republish_count,
            "notification_status": record.status.value if record else None,
            "attempts": record.attempts if record else None,
        }
    stats = await state.dlq.stats()
    jobs = [
        {
            "id": j.id,
            "total": j.total,
            "republished": j.republished,
            "skipped": j.skipped,
            "failed": j.failed,
            "running": j.running,
        }
        for j in state.jobs.recent()[:3]
    ]
    return {
        "rows": rows,
        "pending": stats.pending_by_channel,
        "pending_total": sum(stats.pending_by_channel.values()),
        "jobs": jobs,
    }
