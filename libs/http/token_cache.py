"""Verified tokens remembered until they expire: a client sends the same token with every request.

Verifying an RS256 signature is the single largest cost of a gateway request's own code. A
token already verified is looked up by its SHA-256 digest (the token itself is not kept) and its
principal reused until the token's ``exp``, so an expired token is never accepted. What verifying
again would catch and this does not: a token whose signing key was retired since, or whose client
was revoked, keeps working until its own expiry (minutes: ``ACCESS_TOKEN_TTL_SECONDS``), which is
already the window of every verifier that caches public keys.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from libs.http.auth import Principal, TokenVerifier


class CachedVerifier:
    def __init__(self, verifier: TokenVerifier, max_entries: int = 10_000) -> None:
        self._verifier = verifier
        self._max = max_entries
        self._known: OrderedDict[bytes, Principal] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        known = self._known.get(digest)
        if known is not None:
            if known.exp > time.time():
                self._known.move_to_end(digest)
                return known
            del self._known[digest]
        principal = await self._verifier.verify(token)  # raises for anything not acceptable
        self._known[digest] = principal
        if len(self._known) > self._max:
            self._known.popitem(last=False)
        return principal
