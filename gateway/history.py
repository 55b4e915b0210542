"""The durable notification log: every notification and every status change, in PostgreSQL.

Redis holds the hot status (libs/storage/status_store.py). Each status write there also appends,
in the same Lua script, an entry to a Redis stream (the outbox): a snapshot of the notification
after the change and the timeline event. So nothing on the send path waits for PostgreSQL, and no
change can reach Redis without its history entry.

:class:`HistoryRecorder` reads that stream in batches through a consumer group (any number of
gateway processes share the work), writes each batch in one transaction, then acknowledges and
deletes the entries. Writes are idempotent: an event is keyed by its stream id (a redelivered
entry inserts nothing), and a snapshot replaces the row only if it is newer (by stream id, which
is Redis's own clock), so batches may arrive in any order and twice.

:class:`NotificationHistory` answers reads: one notification (when Redis no longer has it) and the
list, which always comes from here: bounded work through the indexes, whatever the filters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.notification.message import Channel
from libs.notification.status import Status, StatusRecord, TimelineEvent

log = structlog.get_logger(__name__)

metadata = sa.MetaData()

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("notification_id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("request_id", sa.Text(), nullable=False),
    sa.Column("owner", sa.Text()),
    sa.Column("notification_type", sa.String(16), nullable=False),
    sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column("template_code", sa.Text(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("language", sa.Text()),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("provider", sa.Text()),
    sa.Column("last_error", sa.Text()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("version", sa.BigInteger(), nullable=False),
)

notification_events = sa.Table(
    "notification_events",
    metadata,
    sa.Column("stream_id", sa.Text(), primary_key=True),
    sa.Column("notification_id", postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event", postgresql.JSONB(), nullable=False),
)

withdrawn = sa.Table(
    "withdrawn_notifications",
    metadata,
    sa.Column("notification_id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
)
"""Notifications recorded and then withdrawn (the broker did not confirm their publish): what
was recorded before the tombstone is removed, and an older snapshot arriving late is ignored."""

LIST_COUNT_CAP = 10_000
"""The list's ``total`` is exact up to this many (counting further would be unbounded work)."""

GROUP = "recorders"


def stream_version(stream_id: str) -> int:
    """A stream id (``<ms>-<seq>``, Redis's clock) as one sortable integer."""
    ms, _, seq = stream_id.partition("-")
    return int(ms) * 100_000 + min(int(seq or 0), 99_999)


@dataclass(frozen=True)
class Tombstone:
    """The notification was never accepted: forget what was recorded of it before."""

    stream_id: str
    notification_id: UUID

    @property
    def version(self) -> int:
        return stream_version(self.stream_id)


@dataclass(frozen=True)
class HistoryEntry:
    """One outbox entry: the notification after a change, and the event that changed it, as
    the stream holds them (JSON); the recorder hands them to PostgreSQL as they are (see
    :data:`_RECORD`)."""

    stream_id: str
    snapshot_json: bytes
    event_json: bytes

    @classmethod
    def parse(cls, stream_id: str, fields: Mapping[bytes, bytes]) -> HistoryEntry | Tombstone:
        if b"t" in fields:
            return Tombstone(stream_id, UUID(fields[b"t"].decode()))
        return cls(stream_id, fields[b"s"], fields[b"e"])


Entry = HistoryEntry | Tombstone


def _mark_withdrawn() -> sa.Insert:
    mark = postgresql.insert(withdrawn)
    return mark.on_conflict_do_update(
        index_elements=[withdrawn.c.notification_id],
        set_={"version": sa.func.greatest(withdrawn.c.version, mark.excluded.version)},
    )


_MARK_WITHDRAWN = _mark_withdrawn()

# A batch goes to PostgreSQL as three arrays (stream ids, snapshots, events: the JSON the stream
# holds, as it is), and PostgreSQL takes the snapshots apart itself: one statement for any number
# of entries, and no work per entry in Python. (Decoding each entry and encoding its sixteen
# columns as arrays in Python was the recorder's CPU, a fifth of the gateway's under bulk intake.)
# In that one statement: the stream id becomes the version (:func:`stream_version`'s formula); an
# entry no newer than its notification's tombstone is dropped; each event is inserted once; the
# newest snapshot of each notification replaces its row only if the row is older (batches may
# come in any order, and twice). A snapshot is a Redis hash: every value text, "" for none.
_COLUMNS = ", ".join(c.name for c in notifications.c)
_RECORD = f"""
WITH batch AS (
    SELECT b.stream_id,
           split_part(b.stream_id, '-', 1)::bigint * 100000
             + least(coalesce(nullif(split_part(b.stream_id, '-', 2), ''), '0')::bigint, 99999)
             AS version,
           convert_from(b.s, 'UTF8')::jsonb AS s,
           convert_from(b.e, 'UTF8')::jsonb AS e
    FROM unnest($1::text[], $2::bytea[], $3::bytea[]) AS b (stream_id, s, e)
), live AS (
    SELECT batch.*, (s ->> 'notification_id')::uuid AS notification_id
    FROM batch
    WHERE NOT EXISTS (
        SELECT 1 FROM withdrawn_notifications w
        WHERE w.notification_id = (batch.s ->> 'notification_id')::uuid
          AND w.version >= batch.version
    )
), events AS (
    INSERT INTO notification_events (stream_id, notification_id, version, at, event)
    SELECT stream_id, notification_id, version, (e ->> 'at')::timestamptz, e FROM live
    ON CONFLICT (stream_id) DO NOTHING
)
INSERT INTO notifications ({_COLUMNS})
SELECT DISTINCT ON (notification_id)
    notification_id,
    s ->> 'request_id',
    nullif(s ->> 'owner', ''),
    s ->> 'notification_type',
    (s ->> 'user_id')::uuid,
    s ->> 'template_code',
    coalesce(nullif(s ->> 'priority', ''), '0')::integer,
    nullif(s ->> 'language', ''),
    s ->> 'status',
    coalesce(nullif(s ->> 'attempts', ''), '0')::integer,
    nullif(s ->> 'provider', ''),
    nullif(s ->> 'last_error', ''),
    (s ->> 'created_at')::timestamptz,
    coalesce(nullif(s ->> 'updated_at', ''), s ->> 'created_at')::timestamptz,
    nullif(s ->> 'finished_at', '')::timestamptz,
    version
FROM live
ORDER BY notification_id, version DESC
ON CONFLICT (notification_id) DO UPDATE SET
    {", ".join(f"{c.name} = excluded.{c.name}" for c in notifications.c if not c.primary_key)}
WHERE notifications.version < excluded.version
"""  # noqa: S608  (every name is from the tables' definitions; the values travel as parameters)


async def write_batch(engine: AsyncEngine, entries: Sequence[Entry]) -> None:
    """Apply a batch in one transaction: tombstones remove what was recorded before them; the
    newest snapshot of each notification replaces an older row; events are inserted once. Any
    batch may be applied again, or after a newer one, with the same result."""
    tombstones: dict[UUID, int] = {}
    records: list[HistoryEntry] = []
    for entry in entries:
        if isinstance(entry, Tombstone):
            tombstones[entry.notification_id] = max(
                entry.version, tombstones.get(entry.notification_id, 0)
            )
        else:
            records.append(entry)
    async with engine.begin() as conn:
        if tombstones:  # first: the statement below leaves out what they withdraw
            await _withdraw(conn, tombstones)
        if records:
            await conn.exec_driver_sql(
                _RECORD,
                (
                    [e.stream_id for e in records],
                    [e.snapshot_json for e in records],
                    [e.event_json for e in records],
                ),
            )


async def _withdraw(conn: AsyncConnection, tombstones: Mapping[UUID, int]) -> None:
    now = datetime.now(UTC)
    await conn.execute(
        _MARK_WITHDRAWN,
        [{"notification_id": n, "version": v, "withdrawn_at": now} for n, v in tombstones.items()],
    )
    for nid, version in tombstones.items():
        await conn.execute(
            notification_events.delete().where(
                notification_events.c.notification_id == nid,
                notification_events.c.version < version,
            )
        )
        await conn.execute(
            notifications.delete().where(
                notifications.c.notification_id == nid, notifications.c.version < version
            )
        )


class HistoryRecorder:
    """Moves the outbox stream into PostgreSQL, a batch at a time (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        stream: str,
        consumer: str,
        *,
        batch: int = 500,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
        linger_ms: int = 0,
        retention: timedelta | None = None,
    ) -> None:
        """``linger_ms``: after a batch smaller than ``batch``, wait this long before reading the
        next, so that under a steady trickle the entries are written a few hundred at a time
        rather than a handful (each batch is a transaction and five round trips)."""
        self._redis = redis
        self._engine = engine
        self._stream = stream
        self._consumer = consumer
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._linger = linger_ms / 1000
        self._retention = retention
        # entries this consumer read and has not acknowledged (after a failed write, a restart)
        self._own_pending = True
        self._claimed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._purged_at: float | None = None  # loop.time() is the machine's uptime: not 0

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="history-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            # redis-py may turn the cancellation of a blocked XREADGROUP into a RedisError; the flag
            # makes the loop end even then rather than retry forever
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                while not self._stopping:
                    recorded = await self.record_once()
                    await self._purge_if_due()
                    backoff = 0.5
                    if 0 < recorded < self._batch and self._linger:
                        await asyncio.sleep(self._linger)
            except (RedisError, OSError, SQLAlchemyError) as exc:
                if self._stopping:
                    return
                # nothing is lost: unacknowledged entries stay in the stream for the next try
                log.warning("history.record_failed", error=repr(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def record_once(self, block_ms: int | None = None) -> int:
        """Record one batch: this consumer's unacknowledged entries first (after a crash), then
        entries other consumers left idle, then new ones. Returns how many were recorded."""
        try:
            return await self._record_batch(block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group()  # first run, or Redis lost the stream with its group
            return await self._record_batch(block_ms)

    async def _record_batch(self, block_ms: int | None) -> int:
        entries: list[Entry] = []
        if self._own_pending:
            entries = await self._read("0", block_ms=None)
            self._own_pending = bool(entries)
        if not entries and self._claim_due():
            entries = await self._claim_idle()
            if entries:
                self._claimed_at = None  # there may be more: look again next batch
        if not entries:
            wait = self._block_ms if block_ms is None else block_ms
            entries = await self._read(">", block_ms=wait)
        if not entries:
            return 0
        self._own_pending = True  # until acknowledged
        await write_batch(self._engine, entries)
        ids = [e.stream_id for e in entries]
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(self._stream, GROUP, *ids)
        pipe.xdel(self._stream, *ids)
        await pipe.execute()
        self._own_pending = False
        return len(entries)

    def _claim_due(self) -> bool:
        """Entries of a consumer that died are looked for every half of ``claim_idle_ms``, not
        before every batch."""
        now = asyncio.get_running_loop().time()
        if self._claimed_at is not None and now - self._claimed_at < self._claim_idle_ms / 2000:
            return False
        self._claimed_at = now
        return True

    async def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        reply: Any = await self._redis.xreadgroup(
            GROUP, self._consumer, {self._stream: start}, count=self._batch, block=block_ms
        )
        return [
            HistoryEntry.parse(_text(stream_id), fields)
            for _stream, messages in reply or []
            for stream_id, fields in messages
            if fields  # an entry deleted meanwhile comes back without fields
        ]

    async def _claim_idle(self) -> list[Entry]:
        reply: Any = await self._redis.xautoclaim(
            self._stream, GROUP, self._consumer, self._claim_idle_ms, "0-0", count=self._batch
        )
        messages = reply[1] if reply else []
        return [HistoryEntry.parse(_text(i), f) for i, f in messages if f]

    async def _purge_if_due(self) -> None:
        if self._retention is None:
            return
        loop = asyncio.get_running_loop()
        if self._purged_at is not None and loop.time() - self._purged_at < 3600:
            return
        self._purged_at = loop.time()
        cutoff = datetime.now(UTC) - self._retention
        old = sa.select(notifications.c.notification_id).where(notifications.c.created_at < cutoff)
        async with self._engine.begin() as conn:
            await conn.execute(
                notification_events.delete().where(notification_events.c.notification_id.in_(old))
            )
            purged = await conn.execute(
                notifications.delete().where(notifications.c.created_at < cutoff)
            )
            await conn.execute(withdrawn.delete().where(withdrawn.c.withdrawn_at < cutoff))
        log.info("history.purged", before=cutoff.isoformat(), notifications=purged.rowcount)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NotificationHistory:
    """Reads of the durable log."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, notification_id: str) -> StatusRecord | None:
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(notifications).where(
                            notifications.c.notification_id == UUID(notification_id)
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            events = (
                await conn.execute(
                    sa.select(notification_events.c.event)
                    .where(notification_events.c.notification_id == row["notification_id"])
                    .order_by(notification_events.c.version)
                )
            ).scalars()
            return _record(row, [TimelineEvent.model_validate(e) for e in events])

    async def find_request(self, owner: str, request_id: str) -> str | None:
        """The newest notification a caller sent with this request_id."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                sa.select(notifications.c.notification_id)
                .where(notifications.c.owner == owner, notifications.c.request_id == request_id)
                .order_by(notifications.c.created_at.desc())
                .limit(1)
            )
        return None if found is None else str(found)

    async def search(
        self,
        *,
        user_id: str | None = None,
        channel: Channel | None = None,
        status: Status | None = None,
        owner: str | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[list[StatusRecord], int]:
        """Newest first; ``total`` is exact up to :data:`LIST_COUNT_CAP`."""
        conditions = []
        if user_id:
            conditions.append(notifications.c.user_id == UUID(user_id))
        if channel:
            conditions.append(notifications.c.notification_type == channel.value)
        if status:
            conditions.append(notifications.c.status == status.value)
        if owner:
            conditions.append(notifications.c.owner == owner)
        page = (
            sa.select(notifications)
            .where(*conditions)
            .order_by(notifications.c.created_at.desc(), notifications.c.notification_id)
            .offset(offset)
            .limit(limit)
        )
        capped = sa.select(sa.literal(1)).select_from(notifications).where(*conditions)
        count = sa.select(sa.func.count()).select_from(capped.limit(LIST_COUNT_CAP).subquery())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(page)).mappings().all()
            total = int(await conn.scalar(count) or 0)
        return [_record(row, []) for row in rows], total


def _record(row: RowMapping, timeline: list[TimelineEvent]) -> StatusRecord:
    return StatusRecord(
        notification_id=row["notification_id"],
        request_id=row["request_id"],
        notification_type=row["notification_type"],
        user_id=row["user_id"],
        template_code=row["template_code"],
        priority=row["priority"],
        language=row["language"],
        status=row["status"],
        attempts=row["attempts"],
        provider=row["provider"],
        last_error=row["last_error"],
        owner=row["owner"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        timeline=timeline,
    )
