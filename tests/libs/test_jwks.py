"""The JWKS key cache: a flood of tokens with made-up key ids stalls nobody else.

A JWKS server that takes ``SLOW`` seconds per answer stands in for a struggling user_service. The
margins are wide on purpose (a valid request must finish in a fraction of ``SLOW``): the defect
these tests guard against delays valid requests by whole multiples of ``SLOW``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from libs.http.auth import JWKS_PATH, JwksVerifier
from libs.http.errors import ServiceUnavailable, Unauthorized
from tests.support.servers import live_server
from tests.support.tokens import TokenMint

pytestmark = pytest.mark.unit

SLOW = 2.0  # seconds the JWKS server takes to answer
FAST_ENOUGH = SLOW / 4  # a valid request must finish well within this


@dataclass
class SlowJwks:
    url: str
    mint: TokenMint
    delay: float = 0.0
    fetches: int = 0
    failing: bool = False


@pytest.fixture
async def jwks() -> AsyncIterator[SlowJwks]:
    app = FastAPI()
    served = SlowJwks(url="", mint=TokenMint())

    @app.get(JWKS_PATH)
    async def keys() -> dict[str, Any]:
        served.fetches += 1
        await asyncio.sleep(served.delay)
        if served.failing:
            raise RuntimeError("the key store is down")
        return served.mint.jwks()

    async with live_server(app) as base_url:
        served.url = f"{base_url}{JWKS_PATH}"
        yield served


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _verifier(jwks: SlowJwks, http: httpx.AsyncClient, **options: Any) -> JwksVerifier:
    return JwksVerifier(
        jwks.url,
        http,
        issuer=jwks.mint.issuer,
        audience=jwks.mint.audience,
        **{"cache_seconds": 300, "min_refresh_interval": 1.0, **options},
    )


async def _timed(verifier: JwksVerifier, token: str) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await verifier.verify(token)
    except (Unauthorized, ServiceUnavailable) as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _made_up_kid_tokens(mint: TokenMint, count: int) -> list[str]:
    """Tokens signed by keys the JWKS does not publish (as an attacker would send)."""
    return [mint.mint(kid=mint.add_key(publish=False)) for _ in range(count)]


async def test_made_up_kids_while_the_jwks_answers_slowly_do_not_delay_valid_tokens(jwks, http):
    # The cache is stale (older than cache_seconds), so the old verifier made every request,
    # valid or not, queue on one lock behind the made-up kids' refetches and their sleeps.
    verifier = _verifier(jwks, http, cache_seconds=0.2)
    valid = jwks.mint.mint("admin")
    await verifier.verify(valid)
    await asyncio.sleep(0.3)
    jwks.delay = SLOW
    fetches_before = jwks.fetches

    flood = [asyncio.create_task(_timed(verifier, t)) for t in _made_up_kid_tokens(jwks.mint, 30)]
    await asyncio.sleep(0.05)  # the flood is in: its refetch is in flight
    valid_results = await asyncio.wait_for(
        asyncio.gather(*(_timed(verifier, valid) for _ in range(20))), timeout=SLOW * 3
    )
    flood_results = await asyncio.wait_for(asyncio.gather(*flood), timeout=SLOW * 3)

    assert [error for _, error in valid_results] == [None] * 20
    assert max(seconds for seconds, _ in valid_results) < FAST_ENOUGH
    assert {getattr(error, "code", None) for _, error in flood_results} == {"invalid_token"}
    # one fetch served the whole flood (and the periodic refresh), not one per made-up kid
    assert jwks.fetches - fetches_before == 1


async def test_a_burst_of_made_up_kids_costs_one_fetch_and_no_sleep(jwks, http):
    verifier = _verifier(jwks, http)
    await verifier.verify(jwks.mint.mint("admin"))
    jwks.delay = SLOW / 4
    fetches_before = jwks.fetches

    burst = await asyncio.wait_for(
        asyncio.gather(*(_timed(verifier, t) for t in _made_up_kid_tokens(jwks.mint, 40))),
        timeout=SLOW * 3,
    )
    # within the minimum refresh interval after that fetch: refused at once, nothing fetched
    seconds, error = await _timed(verifier, _made_up_kid_tokens(jwks.mint, 1)[0])

    assert {getattr(e, "code", None) for _, e in burst} == {"invalid_token"}
    assert max(s for s, _ in burst) < SLOW  # the one fetch (SLOW / 4) and no sleeping after it
    assert jwks.fetches - fetches_before == 1
    assert isinstance(error, Unauthorized)
    assert seconds < FAST_ENOUGH / 4
    assert jwks.fetches - fetches_before == 1


async def test_a_rotated_key_is_found_by_one_refetch(jwks, http):
    verifier = _verifier(jwks, http, min_refresh_interval=0.2)
    await verifier.verify(jwks.mint.mint("admin"))
    jwks.mint.active = jwks.mint.add_key()  # rotation: published, then used to sign

    principals = await asyncio.gather(
        *(verifier.verify(jwks.mint.mint("service")) for _ in range(5))
    )

    assert {p.role for p in principals} == {"service"}
    assert jwks.fetches == 2


async def test_known_keys_keep_verifying_while_the_jwks_is_down(jwks, http):
    verifier = _verifier(jwks, http, cache_seconds=0.1, min_refresh_interval=0.1)
    valid = jwks.mint.mint("admin")
    await verifier.verify(valid)
    jwks.failing = True
    await asyncio.sleep(0.15)

    results = [await _timed(verifier, valid) for _ in range(3)]

    assert [error for _, error in results] == [None] * 3


async def test_without_any_key_the_answer_is_503_not_a_hang(http):
    verifier = JwksVerifier(
        "http://127.0.0.1:1/.well-known/jwks.json", http, issuer="i", audience="a"
    )
    mint = TokenMint()

    with pytest.raises(ServiceUnavailable) as first:
        await verifier.verify(mint.mint())
    seconds, again = await _timed(verifier, mint.mint())

    assert first.value.code == "auth_unavailable"
    assert isinstance(again, ServiceUnavailable)
    assert seconds < 0.1  # within the refresh interval: no new attempt, no wait
