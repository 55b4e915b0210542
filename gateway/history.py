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
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
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
    """One outbox entry: the notification after a change, and the event that changed it."""

    stream_id: str
    snapshot: dict[str, str]
    event: dict[str, Any]
    event_json: str = ""
    """The event as the stream holds it, for its JSONB column."""

    @classmethod
    def parse(cls, stream_id: str, fields: Mapping[bytes, bytes]) -> HistoryEntry | Tombstone:
        if b"t" in fields:
            return Tombstone(stream_id, UUID(fields[b"t"].decode()))
        return cls(
            stream_id=stream_id,
            snapshot=orjson.loads(fields[b"s"]),
            event=orjson.loads(fields[b"e"]),
            event_json=fields[b"e"].decode(),
        )

    @functools.cached_property
    def notification_id(self) -> UUID:
        return UUID(self.snapshot["notification_id"])

    @functools.cached_property
    def version(self) -> int:
        return stream_version(self.stream_id)

    def row(self) -> tuple[Any, ...]:
        """The notification's row: values in the order of the ``notifications`` table's columns."""
        s = self.snapshot
        finished = s.get("finished_at")
        return (
            s["notification_id"],  # (asyncpg takes a uuid as text: no UUID object to build)
            s["request_id"],
            s.get("owner") or None,
            s["notification_type"],
            s["user_id"],
            s["template_code"],
            int(s.get("priority") or 0),
            s.get("language") or None,
            s["status"],
            int(s.get("attempts") or 0),
            s.get("provider") or None,
            s.get("last_error") or None,
            datetime.fromisoformat(s["created_at"]),
            datetime.fromisoformat(s.get("updated_at") or s["created_at"]),
            datetime.fromisoformat(finished) if finished else None,
            self.version,
        )

    def event_row(self) -> tuple[Any, ...]:
        """The event's row: values in the order of the ``notification_events`` table's columns."""
        return (
            self.stream_id,
            self.snapshot["notification_id"],
            self.version,
            datetime.fromisoformat(self.event["at"]),
            self.event_json or orjson.dumps(self.event).decode(),
        )


Entry = HistoryEntry | Tombstone


def _mark_withdrawn() -> sa.Insert:
    mark = postgresql.insert(withdrawn)
    return mark.on_conflict_do_update(
        index_elements=[withdrawn.c.notification_id],
        set_={"version": sa.func.greatest(withdrawn.c.version, mark.excluded.version)},
    )


_MARK_WITHDRAWN = _mark_withdrawn()

# A batch goes to PostgreSQL as one array per column, turned back into rows by unnest: one
# statement and a parameter per column for any number of rows, the arrays encoded by asyncpg.
# (Through SQLAlchemy's executemany every value of every row went through its type processing in
# Python: most of the recorder's CPU, which was the largest part of the gateway's in a campaign.)
# Columns and their types come from the tables above; rows are tuples in the tables' order.


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]  # (untyped in SQLAlchemy)


def _insert_rows(table: sa.Table) -> str:
    columns = ", ".join(c.name for c in table.c)
    arrays = ", ".join(
        f"${n}::{c.type.compile(dialect=_POSTGRESQL)}[]" for n, c in enumerate(table.c, start=1)
    )
    # (every name here is from the table's definition; the values travel as parameters)
    return f"INSERT INTO {table.name} ({columns}) SELECT * FROM unnest({arrays})"  # noqa: S608


def _columns(rows: Sequence[Sequence[Any]]) -> tuple[list[Any], ...]:
    """Rows as one list per column: the parameters of :func:`_insert_rows`."""
    return tuple(list(column) for column in zip(*rows, strict=True))


# The newest snapshot replaces a row only if it is newer: batches may come in any order.
_UPSERT_NEWER = (
    _insert_rows(notifications)
    + " ON CONFLICT (notification_id) DO UPDATE SET "
    + ", ".join(f"{c.name} = excluded.{c.name}" for c in notifications.c if not c.primary_key)
    + " WHERE notifications.version < excluded.version"
)
_INSERT_EVENTS_ONCE = _insert_rows(notification_events) + " ON CONFLICT (stream_id) DO NOTHING"
_WITHDRAWN_AMONG = (
    "SELECT notification_id, version FROM withdrawn_notifications "
    "WHERE notification_id = ANY($1::uuid[])"
)


async def write_batch(engine: AsyncEngine, entries: Sequence[Entry]) -> None:
    """Apply a batch in one transaction: tombstones remove what was recorded before them; the
    newest snapshot of each notification replaces an older row; events are inserted once. Any
    batch may be applied again, or after a newer one, with the same result."""
    tombstones: dict[UUID, int] = {}
    for entry in entries:
        if isinstance(entry, Tombstone):
            tombstones[entry.notification_id] = max(
                entry.version, tombstones.get(entry.notification_id, 0)
            )
    records = [e for e in entries if isinstance(e, HistoryEntry)]
    async with engine.begin() as conn:
        if tombstones:
            await _withdraw(conn, tombstones)
        ids = list({e.notification_id for e in records})
        if ids:
            found: Any = await conn.exec_driver_sql(_WITHDRAWN_AMONG, (ids,))
            for nid, version in found:
                tombstones[nid] = max(version, tombstones.get(nid, 0))
        live = [e for e in records if e.version > tombstones.get(e.notification_id, 0)]
        if not live:
            return
        newest: dict[str, tuple[Any, ...]] = {}
        for entry in live:
            row = entry.row()  # (notification_id, ..., version)
            known = newest.get(row[0])
            if known is None or known[-1] < row[-1]:
                newest[row[0]] = row
        await conn.exec_driver_sql(_UPSERT_NEWER, _columns(list(newest.values())))
        await conn.exec_driver_sql(_INSERT_EVENTS_ONCE, _columns([e.event_row() for e in live]))


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
