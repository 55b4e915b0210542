"""Accepting a notification: idempotency, reference checks, status record, confirmed publish.

Idempotency holds under concurrency. The first request with a ``request_id`` reserves the record
``pending`` (``SET NX``) and owns the publish; concurrent duplicates wait for it to become
``accepted`` and return the same answer; a different body with that id is a 409. If the publish is
not confirmed, the owner removes its record (the client may retry) and answers 503.

The notification id is derived from (caller, request_id, body). If a gateway dies after the broker
confirmed but before it recorded ``accepted``, the client's retry publishes a message with the same
id, and the delivery service's send claim keeps it from being sent twice.

Every collaborator is an interface (idempotency store, status store, publisher, user and template
lookups), so the fast tests run this class in memory and the integration tests against Redis and
RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import uuid
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

import orjson
import structlog
from redis.exceptions import RedisError

from gateway.idempotency import IdempotencyRecord, IdempotencyStore
from gateway.schemas import NotificationAccepted, NotificationRequest
from libs.clients.errors import UpstreamNotFound, UpstreamUnavailable
from libs.http.auth import Principal
from libs.http.errors import AppError, Conflict, ServiceUnavailable, Unprocessable
from libs.logging import get_correlation_id
from libs.messaging import headers as amqp_headers
from libs.messaging.publisher import BatchPublisher, OutgoingMessage
from libs.messaging.topology import DIRECT_EXCHANGE, routing_key
from libs.notification.message import Channel, NotificationMessage
from libs.notification.status import NewNotification, Status, StatusStore
from libs.trusted import trusted

log = structlog.get_logger(__name__)

T = TypeVar("T")

NOTIFICATION_NAMESPACE = uuid.UUID("5d8c4a52-3f0e-4b5e-9a55-7c6b1f0e2a10")
POLL_SECONDS = 0.02
# A retry waits at most this long for the request holding its id before it is told 409
# request_in_progress (Retry-After: 1): below the usual client timeouts. A holder cut off by a
# Redis outage leaves its claim until the pending TTL, and a retry must not hang that long.
IN_PROGRESS_WAIT_SECONDS = 10.0


class UserCheck(Protocol):
    """``libs.clients.users.UserDirectory``; raises ``UpstreamUnavailable`` when it cannot tell.
    Its lookup may start at the call, before the answer is awaited."""

    def exists(self, user_id: UUID | str) -> Awaitable[bool]: ...


class TemplateCheck(Protocol):
    """``libs.clients.templates.TemplateCatalog``; raises ``UpstreamNotFound`` for no template.
    Its lookup may start at the call, before the answer is awaited."""

    def channel_of(self, code: str) -> Awaitable[Channel]: ...


@dataclass
class _Lookups:
    """A batch's user and template checks, each distinct one asked once, all started together."""

    users: dict[str, asyncio.Future[bool]]
    templates: dict[str, asyncio.Future[Channel]]

    def abandon(self) -> None:
        """Not needed after all: let them end unheard (their outcomes retrieved, no warning)."""
        checks: list[asyncio.Future[Any]] = [*self.users.values(), *self.templates.values()]
        for check in checks:
            if check.done() and not check.cancelled():
                check.exception()
            else:
                check.cancel()


@dataclass(frozen=True)
class Accepted:
    response: NotificationAccepted
    replayed: bool
    remembered: bool = True
    """False when the broker confirmed but the idempotency record could not be saved."""


_NAMESPACE_BYTES = NOTIFICATION_NAMESPACE.bytes


def notification_id_of(scope: str, request_id: str, fp: str) -> tuple[UUID, str]:
    """The notification id of a caller's request (``uuid5`` of caller, request id and body
    fingerprint) and its text: :func:`uuid.uuid5`'s value, made without the import it runs on
    every call and the UUID's own formatting (both Python, and this runs per notification)."""
    name = _NAMESPACE_BYTES + f"{scope}\n{request_id}\n{fp}".encode()
    # (SHA-1 is what a version 5 UUID is defined by; it names, it does not protect)
    digest = bytearray(hashlib.sha1(name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return UUID(bytes=bytes(digest)), f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def fingerprint(request: NotificationRequest) -> str:
    canonical = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class NotificationIntake:
    def __init__(
        self,
        *,
        idempotency: IdempotencyStore,
        status: StatusStore,
        publisher: BatchPublisher,
        users: UserCheck | None,
        templates: TemplateCheck | None,
        idempotency_ttl: int,
        pending_ttl: int,
        confirm_timeout: float,
        in_progress_wait: float = IN_PROGRESS_WAIT_SECONDS,
    ) -> None:
        self._idempotency = idempotency
        self._status = status
        self._publisher = publisher
        self._users = users
        self._templates = templates
        self._ttl = idempotency_ttl
        self._pending_ttl = pending_ttl
        self._confirm_timeout = confirm_timeout
        self._in_progress_wait = in_progress_wait
        self._this_turn: dict[str, _Turn] = {}  # by caller
        self._turns_under_way: set[asyncio.Task[None]] = set()

    async def submit(self, principal: Principal, request: NotificationRequest) -> Accepted:
        """Accept one notification, or raise the error its answer is.

        The requests a caller submits in one turn of the event loop are accepted together, as
        :meth:`submit_many` accepts a batch (one claim, one status script, the publishes
        confirmed together, one settle): under load a gateway holds dozens of requests at the
        same step, and each round trip then serves them all. Each still gets the answer it
        would get alone, and a 202 only once the broker confirmed its own message. Nothing
        waits for a timer or for other turns' requests."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Accepted | AppError] = loop.create_future()
        turn = self._this_turn.get(principal.sub)
        if turn is None:
            if not self._this_turn:
                loop.call_soon(self._accept_this_turn)
            turn = self._this_turn[principal.sub] = _Turn(principal)
        turn.add(request, answer)
        outcome = await answer
        if isinstance(outcome, AppError):
            raise outcome
        if not outcome.replayed:
            log.info(
                "notification.accepted",
                notification_id=str(outcome.response.notification_id),
                request_id=request.request_id,
                channel=request.notification_type.value,
            )
        return outcome

    def _accept_this_turn(self) -> None:
        turns, self._this_turn = self._this_turn, {}
        for turn in turns.values():
            # (a context of its own: what it logs belongs to no single request of the turn)
            task = asyncio.get_running_loop().create_task(
                self._accept_turn(turn), context=contextvars.Context()
            )
            self._turns_under_way.add(task)
            task.add_done_callback(self._turns_under_way.discard)

    async def _accept_turn(self, turn: _Turn) -> None:
        try:
            outcomes = await self._submit(turn.principal, turn.requests, turn.correlation_ids)
        except asyncio.CancelledError:
            for answer in turn.answers:
                answer.cancel()
            raise
        except BaseException as exc:  # a bug or a lost dependency: each request raises it
            for answer in turn.answers:
                if not answer.done():
                    answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # (SystemExit, KeyboardInterrupt: the process's, not the requests')
            return
        for answer, outcome in zip(turn.answers, outcomes, strict=True):
            if not answer.done():  # (its request may have been cancelled meanwhile)
                answer.set_result(outcome)

    async def submit_many(
        self, principal: Principal, requests: Sequence[NotificationRequest]
    ) -> list[Accepted | AppError]:
        """Each request answered as it would be alone, in order: accepted (confirmed by the
        broker), replayed, or the error it would have raised."""
        answers = await self._submit(principal, requests, [get_correlation_id()] * len(requests))
        accepted = sum(1 for a in answers if isinstance(a, Accepted) and not a.replayed)
        if accepted:
            log.info(
                "notifications.accepted",
                count=accepted,
                refused=sum(1 for a in answers if isinstance(a, AppError)),
            )
        return answers

    async def _submit(
        self,
        principal: Principal,
        requests: Sequence[NotificationRequest],
        correlation_ids: Sequence[str | None],
    ) -> list[Accepted | AppError]:
        """:meth:`submit_many`, each message carrying its own request's correlation id. The
        batch's request ids are claimed in one script, statuses created in one, publishes
        confirmed together and the answers recorded in one script: a batch of 1,000 costs the
        Redis round trips of one request."""
        now = datetime.now(UTC)  # (one accepted_at for the batch)
        items = [
            _Item(principal, request, now, cid)
            for request, cid in zip(requests, correlation_ids, strict=True)
        ]
        answers: list[Accepted | AppError | None] = [None] * len(items)
        # Started before the claim, so that their cache reads share its round trip to Redis;
        # only the items this call claims use them.
        lookups = self._look_up_references(items)
        try:
            found = await self._idempotency.claim(
                principal.sub, [(i.request.request_id, i.pending) for i in items], self._pending_ttl
            )
        except RedisError as exc:
            lookups.abandon()
            log.warning("intake.redis_unavailable", error=repr(exc))
            return [_redis_unavailable() for _ in items]
        ours: list[int] = []
        waiting: list[int] = []
        for n, (item, record) in enumerate(zip(items, found, strict=True)):
            if record is None:
                ours.append(n)
            elif record.fingerprint != item.fingerprint:
                answers[n] = _conflict()
            elif record.state == "accepted" and record.response is not None:
                answers[n] = Accepted(record.response, replayed=True)
            else:
                waiting.append(n)  # in flight elsewhere (or earlier in this batch)

        async def wait(n: int) -> None:
            answers[n] = await self._after_the_other(principal, items[n])

        if not ours:
            lookups.abandon()
        handled = await _together(
            [
                self._accept_claimed(principal, [items[n] for n in ours], ours, answers, lookups),
                *(wait(n) for n in waiting),
            ]
        )
        for outcome in handled:
            if isinstance(outcome, BaseException):  # a bug or a lost dependency: not an answer
                raise outcome
        return [a if a is not None else _redis_unavailable() for a in answers]

    async def _after_the_other(self, principal: Principal, item: _Item) -> Accepted | AppError:
        """A request whose id another request holds: that one's answer once it has one, or this
        request accepted anew if the other gave the id up (its publish failed, or it crashed)."""
        wait = min(self._pending_ttl + self._confirm_timeout, self._in_progress_wait)
        deadline = asyncio.get_running_loop().time() + wait
        try:
            earlier = await self._earlier_answer(
                principal.sub, item.request.request_id, item.fingerprint, deadline
            )
        except AppError as exc:
            return exc
        except RedisError:
            return _redis_unavailable()
        if earlier is not None:
            return earlier
        [answer] = await self._submit(principal, [item.request], [item.correlation_id])
        return answer

    async def _accept_claimed(
        self,
        principal: Principal,
        items: list[_Item],
        slots: list[int],
        answers: list[Accepted | AppError | None],
        lookups: _Lookups,
    ) -> None:
        """Check references, record, publish and settle the items whose ids this call claimed;
        an item not confirmed by the broker gives its id back and is answered with the error."""
        if not items:
            return
        settled: set[int] = set()
        try:
            refused = await self._verify_references(items, lookups)
            ready = [k for k in range(len(items)) if k not in refused]
            for k, reason in refused.items():
                answers[slots[k]] = reason
            confirmed = await self._record_and_publish(principal, [items[k] for k in ready])
            for k, failure in zip(ready, confirmed, strict=True):
                if failure is not None:
                    answers[slots[k]] = failure
            accepted = [k for k, failure in zip(ready, confirmed, strict=True) if failure is None]
            settled.update(accepted)
            await self._settle(principal, [items[k] for k in accepted])
            for k in accepted:
                answers[slots[k]] = Accepted(
                    items[k].response, replayed=False, remembered=items[k].remembered
                )
        finally:
            unsettled = [items[k] for k in range(len(items)) if k not in settled]
            if unsettled:  # give the request ids back: a retry may take them
                with contextlib.suppress(RedisError):
                    await self._idempotency.release(
                        principal.sub, [(i.request.request_id, i.pending) for i in unsettled]
                    )

    async def _record_and_publish(
        self, principal: Principal, items: list[_Item]
    ) -> list[AppError | None]:
        """Per item None (the broker confirmed it) or why not; what was not confirmed leaves no
        status behind."""
        if not items:
            return []
        try:
            created = await self._status.create_many([i.record for i in items])
        except RedisError as exc:
            log.warning("intake.redis_unavailable", error=repr(exc))
            return [_redis_unavailable() for _ in items]
        headers = {amqp_headers.ATTEMPTS: 0}  # (one mapping: encoded once for the batch)
        outcomes = await self._publisher.publish_many([item.outgoing(headers) for item in items])
        errors: list[AppError | None] = []
        withdrawn = []
        for item, made, outcome in zip(items, created, outcomes, strict=True):
            if outcome is not None:
                errors.append(_broker_unavailable())
                if made:
                    withdrawn.append(item.record)
            else:
                errors.append(None)
        if withdrawn:
            await self._status.delete_many(withdrawn)
        return errors

    async def _settle(self, principal: Principal, items: list[_Item]) -> None:
        """Remember the answers. If Redis cannot, the broker has the messages: they *were*
        accepted, so say so. A retry with the same request_id derives the same notification id,
        and the send claim and the status record make sure it is delivered once."""
        if not items:
            return
        records = [
            (
                i.request.request_id,
                trusted(
                    IdempotencyRecord,
                    state="accepted",
                    fingerprint=i.fingerprint,
                    notification_id=None,
                    response=i.response,
                ),
            )
            for i in items
        ]
        try:
            await self._idempotency.settle(principal.sub, records, self._ttl)
        except RedisError as exc:
            log.warning("intake.not_remembered", count=len(items), error=repr(exc))
            for item in items:
                item.remembered = False

    async def notification_id_for(self, principal: Principal, request_id: str) -> str | None:
        """The notification a caller's ``request_id`` was accepted as, if it was."""
        record = await self._idempotency.read(principal.sub, request_id)
        if record is None or record.response is None:
            return None
        return str(record.response.notification_id)

    async def _earlier_answer(
        self, scope: str, request_id: str, fp: str, deadline: float
    ) -> Accepted | None:
        """The answer given to an earlier request with this id (waiting while it is in flight).

        None when there is no record (any more): the caller may take the id.
        """
        loop = asyncio.get_running_loop()
        while True:
            record = await self._idempotency.read(scope, request_id)
            if record is None:
                return None
            if record.fingerprint != fp:
                raise _conflict()
            if record.state == "accepted" and record.response is not None:
                return Accepted(record.response, replayed=True)
            if loop.time() > deadline:
                raise Conflict(
                    "A request with this request_id is still being processed; retry shortly.",
                    code="request_in_progress",
                    headers={"Retry-After": "1"},
                )
            await asyncio.sleep(POLL_SECONDS)

    def _look_up_references(self, items: list[_Item]) -> _Lookups:
        """Start looking up each distinct user and template of ``items`` (a cache read, or a
        call on a miss)."""
        users, templates = self._users, self._templates
        # (ensure_future: the clients' lookups are futures already; a plain coroutine, as an
        # in-memory stand-in returns, becomes a task started now like them)
        return _Lookups(
            users={
                u: asyncio.ensure_future(users.exists(u))
                for u in {str(i.request.user_id) for i in items}
            }
            if users
            else {},
            templates={
                c: asyncio.ensure_future(templates.channel_of(c))
                for c in {i.request.template_code for i in items}
            }
            if templates
            else {},
        )

    async def _verify_references(
        self, items: list[_Item], lookups: _Lookups
    ) -> dict[int, AppError]:
        """Refuse unknown users and templates while their services can tell; accept otherwise.
        Returns the refused items (by position) with their errors."""
        users = sorted({str(i.request.user_id) for i in items})
        codes = sorted({i.request.template_code for i in items})
        try:
            known = await _together([self._user_known(lookups.users.get(u)) for u in users])
            kinds = await _together(
                [self._template_kind(c, lookups.templates.get(c)) for c in codes]
            )
        finally:
            lookups.abandon()  # those of items this call did not claim
        user_known = dict(zip(users, known, strict=True))
        template_kind = dict(zip(codes, kinds, strict=True))
        refused: dict[int, AppError] = {}
        for k, item in enumerate(items):
            request = item.request
            user = user_known[str(request.user_id)]
            kind = template_kind[request.template_code]
            if isinstance(user, BaseException) and not isinstance(user, AppError):
                raise user
            if isinstance(kind, BaseException) and not isinstance(kind, AppError):
                raise kind
            if isinstance(user, AppError):
                refused[k] = user
            elif user is False:
                refused[k] = Unprocessable(
                    f"No user with id {request.user_id}.", code="unknown_user"
                )
            elif isinstance(kind, AppError):
                refused[k] = kind
            elif kind is not None and kind is not request.notification_type:
                refused[k] = Unprocessable(
                    f"Template {request.template_code!r} is a {kind} template, not "
                    f"{request.notification_type}.",
                    code="template_type_mismatch",
                )
        return refused

    async def _user_known(self, lookup: Awaitable[bool] | None) -> bool | None:
        """True/False, or None when nobody can tell (no check, or user_service unreachable)."""
        if lookup is None:
            return None
        try:
            return await lookup
        except UpstreamUnavailable as exc:
            log.warning("intake.user_check_skipped", error=str(exc))
            return None

    async def _template_kind(self, code: str, lookup: Awaitable[Channel] | None) -> Channel | None:
        """The template's channel, or None when nobody can tell; 422 if there is no template."""
        if lookup is None:
            return None
        try:
            return await lookup
        except UpstreamNotFound as exc:
            raise Unprocessable(
                f"No template with code {code!r}.", code="unknown_template"
            ) from exc
        except UpstreamUnavailable as exc:
            log.warning("intake.template_check_skipped", error=str(exc))
            return None


class _Turn:
    """A caller's single requests submitted in one turn of the event loop, and their answers."""

    __slots__ = ("answers", "correlation_ids", "principal", "requests")

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.requests: list[NotificationRequest] = []
        self.correlation_ids: list[str | None] = []
        self.answers: list[asyncio.Future[Accepted | AppError]] = []

    def add(
        self, request: NotificationRequest, answer: asyncio.Future[Accepted | AppError]
    ) -> None:
        self.requests.append(request)
        self.correlation_ids.append(get_correlation_id())
        self.answers.append(answer)


class _Item:
    """One request on its way: its fingerprint, notification id, claim and records."""

    __slots__ = (
        "correlation_id",
        "fingerprint",
        "pending",
        "record",
        "remembered",
        "request",
        "response",
    )

    def __init__(
        self,
        principal: Principal,
        request: NotificationRequest,
        created_at: datetime,
        correlation_id: str | None,
    ) -> None:
        self.request = request
        self.correlation_id = correlation_id
        self.fingerprint = fingerprint(request)
        nid, notification_id = notification_id_of(
            principal.sub, request.request_id, self.fingerprint
        )
        # (trusted: every value here is already validated; this runs per notification)
        self.pending = trusted(
            IdempotencyRecord,
            state="pending",
            fingerprint=self.fingerprint,
            notification_id=notification_id,
            response=None,
        )
        self.record = NewNotification(
            notification_id=notification_id,
            request_id=request.request_id,
            channel=request.notification_type,
            user_id=str(request.user_id),
            template_code=request.template_code,
            priority=request.priority,
            created_at=created_at,
            language=request.language,
            owner=principal.sub,
        )
        self.response = trusted(
            NotificationAccepted,
            notification_id=nid,
            request_id=request.request_id,
            status=Status.PENDING,
            created_at=created_at,
        )
        self.remembered = True

    def outgoing(self, headers: dict[str, int]) -> OutgoingMessage:
        request = self.request
        body = NotificationMessage.encode(
            notification_id=self.response.notification_id,
            request_id=request.request_id,
            notification_type=request.notification_type,
            user_id=request.user_id,
            template_code=request.template_code,
            variables=request.variables,
            language=request.language,
            priority=request.priority,
            metadata=request.metadata,
            created_at=self.response.created_at,
        )
        return OutgoingMessage(
            DIRECT_EXCHANGE,
            routing_key(request.notification_type),
            body,
            self.record.notification_id,
            self.correlation_id,
            headers,
            request.priority,
        )


async def _together(calls: list[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    """``asyncio.gather(..., return_exceptions=True)``, except that a single call (every single
    request) is awaited in place: gather would make it a task of its own."""
    if len(calls) != 1:
        return await asyncio.gather(*calls, return_exceptions=True)
    try:
        return [await calls[0]]
    except Exception as exc:  # as gather reports it; cancellation still propagates
        return [exc]


def _conflict() -> Conflict:
    return Conflict(
        "This request_id was already used with a different body.", code="idempotency_conflict"
    )


def _redis_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The idempotency store is unavailable; nothing was queued.",
        code="redis_unavailable",
        headers={"Retry-After": "1"},
    )


def _broker_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The message broker did not confirm the notification, so it was not accepted. Retry "
        "with the same request_id: it is delivered once even if the broker did take it.",
        code="broker_unavailable",
        headers={"Retry-After": "1"},
    )
