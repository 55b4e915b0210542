"""The DLQ domain: store what failed, republish it, discard it, archive it, each audited.

Adapters come in as arguments (a session factory, a confirmed publisher, the status store, a pacer),
so this module knows no broker, HTTP or Redis client. Every state change happens in its own
transaction, committed before the call returns: a bulk republish that stops half-way keeps what it
did.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, InternalError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from dlq_service import metrics, repository
from dlq_service.failures import (
    IncomingFailure,
    decode_body,
    describe,
    republish_headers,
    republish_number,
)
from dlq_service.models import (
    AUTO_REDRIVE_ACTOR,
    SYSTEM_ACTOR,
    AuditAction,
    FailedMessage,
    FailedMessageEvent,
    FailedState,
)
from dlq_service.repository import FailedFilter
from libs.http.errors import Conflict, NotFound, ServiceUnavailable
from libs.messaging.publisher import Publisher, PublishFailed
from libs.messaging.topology import DIRECT_EXCHANGE, routing_key
from libs.notification.message import Channel
from libs.notification.status import UNDO_REPUBLISH_FROM, Status, TransitionResult

log = structlog.get_logger(__name__)

SERVICE_NAME = "dlq_service"
ARCHIVE_BATCH = 500


class StorageUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class BrokerUnavailable(ServiceUnavailable):
    code = "broker_unavailable"


class NotRepublishable(Conflict):
    code = "not_republishable"


class AlreadyDiscarded(Conflict):
    code = "already_discarded"


class StatusTracker(Protocol):
    async def transition(
        self,
        notification_id: str,
        to: Status | None,
        *,
        event: str,
        service: str,
        allowed_from: Iterable[Status] | None = None,
    ) -> TransitionResult: ...


class Pacer:
    """Spaces calls to at most ``rate`` per second, across every caller sharing this instance."""

    def __init__(self, rate_per_second: float) -> None:
        self._interval = 1.0 / rate_per_second
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


def utcnow() -> datetime:
    return datetime.now(UTC)


REPUBLISH_CLAIM_STALE = timedelta(minutes=5)


@dataclass(frozen=True)
class Republished:
    message: FailedMessage
    # True when the notification's status went from failed back to pending.
    status_reset: bool


@dataclass
class BulkResult:
    matched: int = 0
    republished: int = 0
    skipped: int = 0
    failed: int = 0
    republished_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class RepublishPreview:
    """What a bulk republish would take now: ``matching`` messages, as of the server's ``as_of``.

    Passing ``as_of`` back as the filter's ``until`` keeps messages that fail after the preview
    (a republished message failing again, say) out of the run that follows it.
    """

    matching: int
    as_of: datetime


@dataclass(frozen=True)
class Stats:
    total: int
    by_state: dict[str, int]
    by_channel: dict[str, int]
    by_reason: dict[str, int]
    pending_by_channel: dict[str, int]
    pending_by_reason: dict[str, int]


class DlqService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        statuses: StatusTracker,
        pacer: Pacer,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._statuses = statuses
        self._pacer = pacer
        self._clock = clock

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        """One committed transaction; database failures become :class:`StorageUnavailable`."""
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except (
            OperationalError,
            InterfaceError,
            ProgrammingError,
            InternalError,
            SQLAlchemyTimeoutError,
            OSError,
        ) as exc:
            # The database is away, overloaded or not migrated yet: not this message's fault.
            # Only a refused value (DataError, IntegrityError) is about what was written.
            raise StorageUnavailable(f"The database is unavailable: {type(exc).__name__}") from exc

    # -- intake ---------------------------------------------------------------------------------

    async def store(self, incoming: IncomingFailure) -> bool:
        """Store a message taken from failed.queue; False if this very failure is already stored."""
        now = self._clock()
        row = describe(incoming, now)
        async with self._transaction() as session:
            inserted = await repository.insert_if_new(session, row)
            if inserted:
                repository.add_event(
                    session, row.id, AuditAction.RECEIVED, SYSTEM_ACTOR, now, row.reason
                )
        if inserted:
            metrics.RECEIVED.labels(
                metrics.channel_label(row.channel), metrics.reason_label(row.reason)
            ).inc()
            log.info(
                "dlq.stored",
                failed_id=str(row.id),
                message_id=row.message_id,
                reason=row.reason,
                channel=row.channel,
            )
        else:
            log.info(
                "dlq.duplicate_ignored", message_id=row.message_id, fingerprint=row.fingerprint
            )
        return inserted

    # -- reading --------------------------------------------------------------------------------

    async def get(self, failed_id: uuid.UUID) -> tuple[FailedMessage, Sequence[FailedMessageEvent]]:
        async with self._transaction() as session:
            row = await repository.get(session, failed_id)
            if row is None:
                raise NotFound(f"No failed message {failed_id}.")
            return row, await repository.events(session, failed_id)

    async def get_many(self, ids: Sequence[uuid.UUID]) -> Sequence[FailedMessage]:
        """The messages with these ids (those that exist), in no particular order."""
        if not ids:
            return []
        async with self._transaction() as session:
            return await repository.get_many(session, ids)

    async def search(
        self, f: FailedFilter, *, offset: int, limit: int
    ) -> tuple[Sequence[FailedMessage], int]:
        async with self._transaction() as session:
            rows, total = await repository.search(session, f, offset=offset, limit=limit)
            counts = await repository.counts(session)
        metrics.set_pending(_pending_by_channel(counts))
        return rows, total

    async def stats(self) -> Stats:
        async with self._transaction() as session:
            counts = await repository.counts(session)
        by_state: dict[str, int] = {s.value: 0 for s in FailedState}
        by_channel: dict[str, int] = {}
        by_reason: dict[str, int] = {}
        pending_by_reason: dict[str, int] = {}
        for state, channel, reason, n in counts:
            label = metrics.channel_label(channel)
            by_state[state] = by_state.get(state, 0) + n
            by_channel[label] = by_channel.get(label, 0) + n
            by_reason[reason] = by_reason.get(reason, 0) + n
            if state == FailedState.PENDING:
                pending_by_reason[reason] = pending_by_reason.get(reason, 0) + n
        pending_by_channel = _pending_by_channel(counts)
        metrics.set_pending(pending_by_channel)
        return Stats(
            total=sum(by_state.values()),
            by_state=by_state,
            by_channel=by_channel,
            by_reason=by_reason,
            pending_by_channel=pending_by_channel,
            pending_by_reason=pending_by_reason,
        )

    async def arrivals_per_hour(self, hours: int) -> list[tuple[datetime, int]]:
        """Failed messages received in each of the last ``hours`` hours, oldest first, zeros too."""
        now = self._clock()
        first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
        async with self._transaction() as session:
            rows = await repository.arrivals_per_hour(session, first)
        counts = {at.replace(tzinfo=UTC): n for at, n in rows}
        return [
            (first + timedelta(hours=i), counts.get(first + timedelta(hours=i), 0))
            for i in range(hours)
        ]

    async def with_request_id(self, request_id: str, limit: int = 20) -> Sequence[FailedMessage]:
        async with self._transaction() as session:
            return await repository.with_request_id(session, request_id, limit)

    async def refresh_pending_gauge(self) -> None:
        async with self._transaction() as session:
            counts = await repository.counts(session)
        metrics.set_pending(_pending_by_channel(counts))

    # -- republishing ---------------------------------------------------------------------------

    async def republish(self, failed_id: uuid.UUID, actor: str) -> Republished:
        """Put one failed message back on its work queue (broker-confirmed), then mark it."""
        row = await self._claim_for_republish(failed_id, bulk=False)
        if row is None:
            raise NotFound(f"No failed message {failed_id}.")
        status_reset = await self._republish_claimed(row, actor, note=None)
        return Republished(message=row, status_reset=status_reset)

    async def republish_preview(
        self, f: FailedFilter, ids: Sequence[uuid.UUID] | None
    ) -> RepublishPreview:
        as_of = self._clock()
        async with self._transaction() as session:
            matching = await repository.count_republishable(
                session, replace(f, state=FailedState.PENDING), ids
            )
        return RepublishPreview(matching=matching, as_of=as_of)

    async def republish_many(
        self,
        *,
        f: FailedFilter,
        ids: Sequence[uuid.UUID] | None,
        limit: int,
        actor: str,
    ) -> BulkResult:
        """Republish pending messages matching ``f`` (and ``ids``), paced by the shared pacer.

        Each message is its own transaction. When the broker or the database goes away the run
        stops and counts the rest as failed, rather than waiting out a timeout per message.
        """
        async with self._transaction() as session:
            candidates = await repository.republish_candidates(
                session, replace(f, state=FailedState.PENDING), ids, limit
            )
        result = await self._republish_each(candidates, actor, note="bulk")
        if ids is not None:
            result.skipped += len(set(ids)) - len(candidates)
        return result

    async def auto_redrive(
        self,
        *,
        reasons: Sequence[str],
        channels: Sequence[str],
        max_per_message: int,
        limit: int,
    ) -> BulkResult:
        """Republish what can heal by itself, as the system (see dlq_service/redrive.py)."""
        if not channels:
            return BulkResult()
        async with self._transaction() as session:
            candidates = await repository.auto_redrive_candidates(
                session,
                reasons=reasons,
                channels=channels,
                actor=AUTO_REDRIVE_ACTOR,
                max_per_message=max_per_message,
                limit=limit,
            )
        return await self._republish_each(candidates, AUTO_REDRIVE_ACTOR, note="automatic")

    async def _republish_each(
        self, candidates: Sequence[uuid.UUID], actor: str, note: str
    ) -> BulkResult:
        result = BulkResult(matched=len(candidates))
        for index, candidate in enumerate(candidates):
            await self._pacer.wait()
            try:
                row = await self._claim_for_republish(candidate, bulk=True)
                if row is None:
                    result.skipped += 1  # taken meanwhile by another request
                    continue
                await self._republish_claimed(row, actor, note=note)
            except (BrokerUnavailable, StorageUnavailable) as exc:
                result.failed = len(candidates) - index
                log.warning(
                    "dlq.bulk_republish_stopped", error=exc.message, remaining=result.failed
                )
                break
            result.republished += 1
            result.republished_ids.append(candidate)
        if candidates:
            log.info(
                "dlq.bulk_republished",
                actor=actor,
                matched=result.matched,
                republished=result.republished,
                skipped=result.skipped,
                failed=result.failed,
            )
        return result

    async def _claim_for_republish(
        self, failed_id: uuid.UUID, *, bulk: bool
    ) -> FailedMessage | None:
        """Mark the row ``republishing`` and commit, before anything is published: whatever
        happens next, nobody else republishes it meanwhile. None if there is no such row (or, in
        bulk, another request holds or took it)."""
        async with self._transaction() as session:
            row = await repository.get(session, failed_id, for_update=True, skip_locked=bulk)
            if row is None:
                return None
            if bulk and (row.state != FailedState.PENDING or not row.republishable):
                return None
            self._check_republishable(row)
            row.state = FailedState.REPUBLISHING.value
            row.last_republished_at = self._clock()
            session.add(row)
        return row

    def _check_republishable(self, row: FailedMessage) -> None:
        if row.state == FailedState.DISCARDED:
            raise NotRepublishable("A discarded message cannot be republished.")
        if row.state == FailedState.REPUBLISHING and not self._stale_claim(row):
            raise NotRepublishable(
                "This message is being republished; its outcome is being recorded.",
            )
        if not row.republishable or row.channel is None:
            raise NotRepublishable(
                "This message cannot be republished: its body does not parse as a notification "
                "or its channel is unknown."
            )

    def _stale_claim(self, row: FailedMessage) -> bool:
        """A ``republishing`` claim whose outcome was never recorded (the process or the
        database failed): an operator may republish it again by id, knowingly."""
        claimed = row.last_republished_at
        return claimed is None or self._clock() - claimed > REPUBLISH_CLAIM_STALE

    async def _republish_claimed(self, row: FailedMessage, actor: str, note: str | None) -> bool:
        channel = Channel(str(row.channel))
        body = decode_body(row.body, row.body_encoding)
        number = row.republish_count + 1
        header_number = republish_number(row.headers, row.republish_count)
        # The status goes back to pending before the publish: the delivery service may take the
        # message the moment the broker routes it, and it moves only a pending status forward.
        status_reset = await self._reset_status(row)
        try:
            await self._publisher.publish(
                exchange=DIRECT_EXCHANGE,
                routing_key=routing_key(channel),
                body=body,
                message_id=row.message_id or str(row.notification_id or row.id),
                correlation_id=row.correlation_id,
                headers=republish_headers(row.headers, header_number),
                priority=row.priority,
            )
        except PublishFailed as exc:
            if status_reset:
                await self._restore_failed_status(row)
            await self._release_claim(row)
            raise BrokerUnavailable(
                "The message broker did not confirm the message; it stays pending."
            ) from exc
        metrics.REPUBLISHED.labels(channel.value).inc()
        now = self._clock()
        try:
            async with self._transaction() as session:
                stored = await repository.get(session, row.id, for_update=True)
                if stored is not None:
                    stored.state = FailedState.REPUBLISHED.value
                    stored.republish_count = number
                    stored.last_republished_at = now
                    session.add(stored)
                    repository.add_event(session, row.id, AuditAction.REPUBLISHED, actor, now, note)
        except StorageUnavailable:
            # Published, and the database did not take the record of it: the row stays
            # ``republishing``, so it is not republished a second time by mistake.
            log.error("dlq.republish_not_recorded", failed_id=str(row.id), actor=actor)
        row.state = FailedState.REPUBLISHED.value
        row.republish_count = number
        row.last_republished_at = now
        log.info(
            "dlq.republished",
            failed_id=str(row.id),
            message_id=row.message_id,
            channel=channel.value,
            republish_count=number,
            actor=actor,
        )
        return status_reset

    async def _release_claim(self, row: FailedMessage) -> None:
        """The publish was not confirmed: the row is pending again (best effort: if the database
        is away too, it stays ``republishing`` until an operator republishes it)."""
        try:
            async with self._transaction() as session:
                stored = await repository.get(session, row.id, for_update=True)
                if stored is not None and stored.state == FailedState.REPUBLISHING:
                    stored.state = FailedState.PENDING.value
                    session.add(stored)
        except StorageUnavailable:
            log.error("dlq.republish_claim_not_released", failed_id=str(row.id))

    async def _reset_status(self, row: FailedMessage) -> bool:
        if row.notification_id is None:
            return False
        try:
            result = await self._statuses.transition(
                str(row.notification_id), Status.PENDING, event="republished", service=SERVICE_NAME
            )
        except (RedisError, OSError) as exc:
            # The message matters more than its status: republish anyway.
            log.warning("dlq.status_reset_failed", failed_id=str(row.id), error=repr(exc))
            return False
        return result.applied and result.previous == Status.FAILED

    async def _restore_failed_status(self, row: FailedMessage) -> None:
        try:
            await self._statuses.transition(
                str(row.notification_id),
                Status.FAILED,
                event="republish_failed",
                service=SERVICE_NAME,
                allowed_from=UNDO_REPUBLISH_FROM,
            )
        except (RedisError, OSError) as exc:
            log.warning("dlq.status_restore_failed", failed_id=str(row.id), error=repr(exc))

    # -- discarding and archival ----------------------------------------------------------------

    async def discard(self, failed_id: uuid.UUID, reason: str, actor: str) -> FailedMessage:
        async with self._transaction() as session:
            row = await repository.get(session, failed_id, for_update=True)
            if row is None:
                raise NotFound(f"No failed message {failed_id}.")
            if row.state == FailedState.DISCARDED:
                raise AlreadyDiscarded("This message is already discarded.")
            now = self._clock()
            row.state = FailedState.DISCARDED.value
            session.add(row)
            repository.add_event(session, row.id, AuditAction.DISCARDED, actor, now, reason)
        metrics.DISCARDED.labels(metrics.channel_label(row.channel)).inc()
        log.info("dlq.discarded", failed_id=str(row.id), actor=actor, reason=reason)
        return row

    async def archive_expired(self, retention: timedelta) -> int:
        return await archive_expired(self._sessions, retention, self._clock())


async def archive_expired(
    sessions: async_sessionmaker[AsyncSession], retention: timedelta, now: datetime
) -> int:
    """Archive every message that failed more than ``retention`` ago; returns how many.

    Archived messages stay in the database (listable with ``state=archived``): never lost.
    """
    cutoff = now - retention
    archived = 0
    while True:
        try:
            async with sessions() as session, session.begin():
                rows = await repository.archive_failed_before(session, cutoff, ARCHIVE_BATCH)
                for failed_id, _ in rows:
                    repository.add_event(
                        session, failed_id, AuditAction.ARCHIVED, SYSTEM_ACTOR, now, "retention"
                    )
        except (OperationalError, InterfaceError, SQLAlchemyTimeoutError, OSError) as exc:
            # the database is away or overloaded; any other error is about what was written
            raise StorageUnavailable(f"The database is unavailable: {type(exc).__name__}") from exc
        for _, channel in rows:
            metrics.ARCHIVED.labels(metrics.channel_label(channel)).inc()
        archived += len(rows)
        if len(rows) < ARCHIVE_BATCH:
            break
    if archived:
        log.info("dlq.archived", count=archived, cutoff=cutoff.isoformat())
    return archived


def _pending_by_channel(counts: Iterable[tuple[str, str | None, str, int]]) -> dict[str, int]:
    pending: dict[str, int] = {}
    for state, channel, _, n in counts:
        if state == FailedState.PENDING:
            label = metrics.channel_label(channel)
            pending[label] = pending.get(label, 0) + n
    return pending
