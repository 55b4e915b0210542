"""Verified tokens reused until they expire, never after."""

from __future__ import annotations

import time

import pytest

from libs.http.auth import Principal, Role
from libs.http.errors import Unauthorized
from libs.http.token_cache import CachedVerifier

pytestmark = pytest.mark.unit


class CountingVerifier:
    def __init__(self, lifetime: float) -> None:
        self.calls = 0
        self.lifetime = lifetime

    async def verify(self, token: str) -> Principal:
        self.calls += 1
        if token == "forged":
            raise Unauthorized("bad signature", code="invalid_token")
        return Principal(
            sub=token, role=Role.SERVICE, jti="j", exp=int(time.time() + self.lifetime)
        )


async def test_a_token_is_verified_once_while_it_is_valid():
    inner = CountingVerifier(lifetime=60)
    cached = CachedVerifier(inner)
    principals = [await cached.verify("svc-a") for _ in range(5)]
    assert {p.sub for p in principals} == {"svc-a"}
    assert inner.calls == 1


async def test_an_expired_token_is_verified_again_and_a_bad_one_never_remembered():
    inner = CountingVerifier(lifetime=-1)  # already past its exp when it comes back
    cached = CachedVerifier(inner)
    await cached.verify("svc-a")
    await cached.verify("svc-a")
    assert inner.calls == 2
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await cached.verify("forged")
    assert inner.calls == 4


async def test_the_memory_is_bounded():
    inner = CountingVerifier(lifetime=60)
    cached = CachedVerifier(inner, max_entries=3)
    for name in "abcd":
        await cached.verify(name)
    await cached.verify("a")  # the oldest was forgotten
    assert inner.calls == 5
