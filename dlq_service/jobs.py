"""Bulk republishes the console starts and follows: a page at a time, in the background.

"Republish everything matching" can take a while (the pace is ``REPUBLISH_RATE_PER_SECOND``), so
the page starts a job and returns; the list shows its progress while the messages are delivered.
A job republishes at most what the operator confirmed (the previewed count, among messages that
failed before the preview), so a message failing again meanwhile is not swept into it. At
shutdown a job stops between pages: what it did is committed, the rest stays pending.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog

from dlq_service.repository import FailedFilter
from dlq_service.service import DlqService

log = structlog.get_logger(__name__)

PAGE = 50
KEEP_FINISHED = 20


@dataclass
class RepublishJob:
    id: str
    actor: str
    total: int
    republished: int = 0
    skipped: int = 0
    failed: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    @property
    def done(self) -> int:
        return self.republished + self.skipped + self.failed

    @property
    def running(self) -> bool:
        return self.finished_at is None


class RepublishJobs:
    def __init__(self, dlq: DlqService, page: int = PAGE) -> None:
        self._dlq = dlq
        self._page = page
        self._jobs: dict[str, RepublishJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    def start(self, f: FailedFilter, as_of: datetime, total: int, actor: str) -> RepublishJob:
        """Republish up to ``total`` pending messages matching ``f`` that failed by ``as_of``."""
        until = as_of if f.until is None else min(f.until, as_of)
        job = RepublishJob(id=uuid.uuid4().hex[:12], actor=actor, total=total)
        self._jobs[job.id] = job
        task = asyncio.create_task(self._run(job, replace(f, until=until)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._forget_old()
        log.info("console.republish_job_started", job=job.id, total=total, actor=actor)
        return job

    async def _run(self, job: RepublishJob, f: FailedFilter) -> None:
        try:
            while job.done < job.total and not self._stopping.is_set():
                limit = min(self._page, job.total - job.done)
                result = await self._dlq.republish_many(f=f, ids=None, limit=limit, actor=job.actor)
                job.republished += result.republished
                job.skipped += result.skipped
                job.failed += result.failed
                if result.failed or result.republished == 0:
                    break  # the broker or database went away, or nothing is left to take
        except Exception as exc:  # a job's failure is shown on the page, not raised anywhere
            log.exception("console.republish_job_failed", job=job.id, error=repr(exc))
            job.failed += job.total - job.done
        finally:
            job.finished_at = datetime.now(UTC)
            log.info(
                "console.republish_job_finished",
                job=job.id,
                republished=job.republished,
                skipped=job.skipped,
                failed=job.failed,
            )

    def recent(self) -> list[RepublishJob]:
        return sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)

    def _forget_old(self) -> None:
        finished = [j for j in self.recent() if not j.running]
        for job in finished[KEEP_FINISHED:]:
            del self._jobs[job.id]

    async def close(self) -> None:
        self._stopping.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
