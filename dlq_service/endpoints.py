"""REST API of failed messages (admins only): list, inspect, republish, discard, stats."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from dlq_service.repository import FailedFilter
from dlq_service.schemas import (
    BulkRepublishOut,
    BulkRepublishRequest,
    DiscardRequest,
    FailedListQuery,
    FailedMessageDetail,
    FailedMessageSummary,
    RepublishOut,
    StatsOut,
)
from dlq_service.service import DlqService
from dlq_service.state import State
from libs.http.auth import Principal, Role, require_roles
from libs.http.envelope import Envelope, PageMeta, ok

router = APIRouter(prefix="/api/v1/failed", tags=["failed messages"])

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


def _dlq(state: State) -> DlqService:
    return state.dlq


Dlq = Annotated[DlqService, Depends(_dlq)]


@router.get(
    "/",
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
    "/stats",
    response_model=Envelope[StatsOut],
    summary="Counts by state, channel and reason",
)
async def failed_stats(_: Admin, dlq: Dlq) -> Envelope[StatsOut]:
    return ok(StatsOut.of(await dlq.stats()))


@router.post(
    "/republish",
    response_model=Envelope[BulkRepublishOut],
    summary="Republish pending messages by id and/or filter, paced",
)
async def republish_many(
    principal: Admin, dlq: Dlq, body: BulkRepublishRequest
) -> Envelope[BulkRepublishOut]:
    f = body.filter.to_filter(None, None) if body.filter else FailedFilter()
    result = await dlq.republish_many(f=f, ids=body.ids, limit=body.limit, actor=principal.sub)
    return ok(BulkRepublishOut.of(result))


@router.get(
    "/{failed_id}",
    response_model=Envelope[FailedMessageDetail],
    summary="One failed message with its headers, body and audit trail",
)
async def get_failed(failed_id: uuid.UUID, _: Admin, dlq: Dlq) -> Envelope[FailedMessageDetail]:
    row, events = await dlq.get(failed_id)
    return ok(FailedMessageDetail.with_events(row, list(events)))


@router.post(
    "/{failed_id}/republish",
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
    "/{failed_id}/discard",
    response_model=Envelope[FailedMessageSummary],
    summary="Discard a failed message; the reason goes into the audit trail",
)
async def discard_one(
    failed_id: uuid.UUID, principal: Admin, dlq: Dlq, body: DiscardRequest
) -> Envelope[FailedMessageSummary]:
    row = await dlq.discard(failed_id, body.reason, principal.sub)
    return ok(FailedMessageSummary.of(row), message="Discarded.")
