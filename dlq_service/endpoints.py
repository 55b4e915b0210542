"""REST API of failed messages (admins only): list, inspect, republish, discard, stats."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from dlq_service.notifications import look_up
from dlq_service.schemas import (
    BreakerOut,
    BulkRepublishOut,
    BulkRepublishRequest,
    DeliveryHealthOut,
    DiscardRequest,
    FailedListQuery,
    FailedMessageDetail,
    FailedMessageSummary,
    HourCount,
    LookupOut,
    QueueOut,
    RepublishOut,
    RepublishPreviewOut,
    RepublishSelection,
    StatsOut,
)
from dlq_service.service import DlqService
from dlq_service.state import State
from libs.http.auth import Principal, Role, require_roles
from libs.http.envelope import Envelope, PageMeta, ok

router = APIRouter(prefix="/api/v1", tags=["failed messages"])

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


def _dlq(state: State) -> DlqService:
    return state.dlq


Dlq = Annotated[DlqService, Depends(_dlq)]


@router.get(
    "/failed/",
    response_model=Envelope[list[FailedMessageSummary]],
    summary="List failed messages, newest failure first",
)
async def list_failed(
    _: Admin, dlq: Dlq, query: Annotated[FailedListQuery, Query()]
) -> Envelope[list[FailedMessageSummary]]:
    rows, total = await dlq.search(query.failed_filter(), offset=query.offset, limit=query.limit)
    return ok(
        [FailedMessageSummary.of(r) for r in rows],
        meta=PageMeta.build(total, query.limit, query.page),
    )


@router.get(
    "/failed/stats",
    response_model=Envelope[StatsOut],
    summary="Counts by state, channel and reason",
)
async def failed_stats(_: Admin, dlq: Dlq) -> Envelope[StatsOut]:
    return ok(StatsOut.of(await dlq.stats()))


@router.post(
    "/failed/republish",
    response_model=Envelope[BulkRepublishOut],
    summary="Republish pending messages by id and/or filter, paced",
)
async def republish_many(
    principal: Admin, dlq: Dlq, body: BulkRepublishRequest
) -> Envelope[BulkRepublishOut]:
    result = await dlq.republish_many(
        f=body.failed_filter(), ids=body.ids, limit=body.limit, actor=principal.sub
    )
    return ok(BulkRepublishOut.of(result))


@router.post(
    "/failed/republish/preview",
    response_model=Envelope[RepublishPreviewOut],
    summary="How many pending messages a bulk republish would take now (nothing is republished)",
)
async def republish_preview(
    _: Admin, dlq: Dlq, body: RepublishSelection
) -> Envelope[RepublishPreviewOut]:
    preview = await dlq.republish_preview(body.failed_filter(), body.ids)
    return ok(RepublishPreviewOut.model_validate(preview))


@router.get(
    "/failed/{failed_id}",
    response_model=Envelope[FailedMessageDetail],
    summary="One failed message with its headers, body and audit trail",
)
async def get_failed(failed_id: uuid.UUID, _: Admin, dlq: Dlq) -> Envelope[FailedMessageDetail]:
    row, events = await dlq.get(failed_id)
    return ok(FailedMessageDetail.with_events(row, list(events)))


@router.post(
    "/failed/{failed_id}/republish",
    response_model=Envelope[RepublishOut],
    summary="Put one failed message back on its work queue",
)
async def republish_one(failed_id: uuid.UUID, principal: Admin, dlq: Dlq) -> Envelope[RepublishOut]:
    result = await dlq.republish(failed_id, principal.sub)
    return ok(
        RepublishOut(
            failed_message=FailedMessageSummary.of(result.message),
            status_reset=result.status_reset,
        ),
        message="Republished.",
    )


@router.post(
    "/failed/{failed_id}/discard",
    response_model=Envelope[FailedMessageSummary],
    summary="Discard a failed message; the reason goes into the audit trail",
)
async def discard_one(
    failed_id: uuid.UUID, principal: Admin, dlq: Dlq, body: DiscardRequest
) -> Envelope[FailedMessageSummary]:
    row = await dlq.discard(failed_id, body.reason, principal.sub)
    return ok(FailedMessageSummary.of(row), message="Discarded.")


@router.get(
    "/delivery/health",
    response_model=Envelope[DeliveryHealthOut],
    tags=["operations"],
    summary="Each provider's breaker, each queue's depth, failed messages received per hour",
)
async def delivery_health(_: Admin, state: State) -> Envelope[DeliveryHealthOut]:
    breakers = await state.probe.breakers()
    queues = await state.probe.queues()
    arrivals = await state.dlq.arrivals_per_hour(24)
    return ok(
        DeliveryHealthOut(
            breakers=[BreakerOut.model_validate(b) for b in breakers],
            queues=[QueueOut.model_validate(q) for q in queues],
            arrivals=[HourCount(hour=h, count=n) for h, n in arrivals],
        )
    )


@router.get(
    "/lookup/{query}",
    response_model=Envelope[LookupOut],
    tags=["operations"],
    summary="A notification's status and timeline by notification id or request id, with its "
    "failures",
)
async def lookup(query: str, _: Admin, state: State) -> Envelope[LookupOut]:
    return ok(LookupOut.of(await look_up(state.history, state.dlq, query)))
