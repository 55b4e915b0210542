"""Retry policy: exponential backoff with jitter over delay queues, and parking without an attempt.

Pure data and arithmetic (no broker imports): settings build it, the consumer applies it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; one delay queue per configured delay.

    ``delays_ms[i]`` is the wait before retry ``i + 1``; after ``len(delays_ms)`` retries the
    message is dead-lettered. Each message's expiration is its queue's delay scaled by a random
    factor in ``[1 - jitter, 1 + jitter]``; a queue expires messages in order, so a message can wait
    at most ``2 * jitter * delay`` longer than its own expiration.
    """

    delays_ms: tuple[int, ...] = (1000, 2000, 4000)
    jitter: float = 0.2
    claim_wait_ms: int = 2000
    park_delays_ms: tuple[int, ...] = (5_000, 15_000, 30_000, 60_000)
    max_waits: int = 720

    @property
    def max_retries(self) -> int:
        return len(self.delays_ms)

    def queue_delays(self) -> tuple[int, ...]:
        """Every delay that needs a queue."""
        return tuple(sorted({*self.delays_ms, self.claim_wait_ms, *self.park_delays_ms}))

    def delay_for(self, retry_number: int, not_before_ms: int = 0) -> tuple[int, int]:
        """(queue delay, jittered expiration) for retry number ``retry_number`` (1-based)."""
        base = self.delays_ms[min(retry_number, len(self.delays_ms)) - 1]
        return self._jittered(max(base, not_before_ms))

    def wait_delay(self, not_before_ms: int = 0) -> tuple[int, int]:
        """(queue delay, expiration) for parking a message without spending an attempt."""
        return self._jittered(max(self.claim_wait_ms, not_before_ms))

    def _jittered(self, wanted_ms: int) -> tuple[int, int]:
        # The smallest delay queue that is long enough (a provider's Retry-After can be long).
        longer = [d for d in self.queue_delays() if d >= wanted_ms]
        base = longer[0] if longer else max(self.queue_delays())
        factor = 1 + random.uniform(-self.jitter, self.jitter)  # noqa: S311 - jitter, not crypto
        return base, max(1, int(base * factor))
