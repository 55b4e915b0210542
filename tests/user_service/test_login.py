"""POST /api/v1/auth/login: tokens, uniform failures, lockout and slow-down."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlmodel import select

from libs.storage.db import create_engine, session_factory
from tests.support.servers import app_client
from tests.user_service.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    SERVICE_EMAIL,
    SERVICE_PASSWORD,
    bearer,
    login,
    make_settings,
    register,
    unique_email,
)
from user_service.app import create_app
from user_service.models import User
from user_service.throttle import slowdown_seconds

LOGIN = "/api/v1/auth/login"


async def _attempt(client, email, password):
    return await client.post(LOGIN, json={"email": email, "password": password})


async def test_login_returns_a_bearer_token_and_the_user(client, settings):
    user = await register(client, name="Login Person")

    response = await _attempt(client, user["email"], PASSWORD)

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == settings.access_token_ttl_seconds
    assert data["access_token"].count(".") == 2
    assert data["user"] == {
        "id": user["id"],
        "name": "Login Person",
        "email": user["email"],
        "role": "user",
    }


async def test_login_ignores_email_case_and_spaces(client):
    user = await register(client)

    response = await _attempt(client, f"  {user['email'].upper()} ", PASSWORD)

    assert response.status_code == 200


async def test_wrong_password_and_unknown_email_fail_alike(client):
    user = await register(client)

    wrong = await _attempt(client, user["email"], "wrong-password-1")
    unknown = await _attempt(client, unique_email("nobody"), PASSWORD)

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == unknown.json()["error"] == "invalid_credentials"
    assert wrong.json()["message"] == unknown.json()["message"]


async def test_login_body_is_validated(client):
    response = await client.post(LOGIN, json={"email": "x@example.com"})

    assert response.status_code == 422
    assert response.json()["data"]["errors"][0]["field"] == "password"


async def test_five_failures_lock_the_account_even_for_the_right_password(client, settings):
    user = await register(client)
    failures = [await _attempt(client, user["email"], "wrong-password-1") for _ in range(5)]

    locked = await _attempt(client, user["email"], PASSWORD)

    assert [r.status_code for r in failures] == [401] * 5
    assert locked.status_code == 429
    assert locked.json()["error"] == "too_many_attempts"
    retry_after = int(locked.headers["Retry-After"])
    assert 0 < retry_after <= settings.login_lockout_seconds


async def test_a_strangers_failures_lock_only_the_strangers_address(client):
    user = await register(client)
    async with client.calling_from("203.0.113.9") as stranger:
        guesses = [await _attempt(stranger, user["email"], "wrong-password-1") for _ in range(6)]

        owner = await _attempt(client, user["email"], PASSWORD)  # from the owner's address
        stranger_again = await _attempt(stranger, user["email"], PASSWORD)

    assert [r.status_code for r in guesses] == [401] * 5 + [429]
    assert owner.status_code == 200
    assert stranger_again.status_code == 429


async def test_the_service_account_is_never_locked_out(client):
    failures = [await _attempt(client, SERVICE_EMAIL, "wrong-password-1") for _ in range(8)]

    response = await _attempt(client, SERVICE_EMAIL, SERVICE_PASSWORD)

    assert [r.status_code for r in failures] == [401] * 8
    assert response.status_code == 200
    assert response.json()["data"]["user"]["role"] == "service"


async def test_unknown_emails_lock_too_so_lockout_reveals_nothing(client):
    email = unique_email("ghost")
    for _ in range(5):
        await _attempt(client, email, "wrong-password-1")

    response = await _attempt(client, email, "wrong-password-1")

    assert response.status_code == 429


async def test_lockout_expires(settings):
    short = settings.model_copy(update={"login_max_failures": 2, "login_lockout_seconds": 1})
    async with app_client(create_app(short)) as client:
        user = await register(client)
        for _ in range(2):
            await _attempt(client, user["email"], "wrong-password-1")
        assert (await _attempt(client, user["email"], PASSWORD)).status_code == 429

        await asyncio.sleep(1.2)

        assert (await _attempt(client, user["email"], PASSWORD)).status_code == 200


async def test_a_successful_login_resets_the_failure_count(client):
    user = await register(client)
    for _ in range(4):
        await _attempt(client, user["email"], "wrong-password-1")
    assert (await _attempt(client, user["email"], PASSWORD)).status_code == 200

    after_reset = [await _attempt(client, user["email"], "wrong-password-1") for _ in range(4)]

    assert [r.status_code for r in after_reset] == [401] * 4


async def test_repeated_failures_slow_down_further_attempts(settings):
    slow = settings.model_copy(
        update={
            "login_slowdown_after": 2,
            "login_slowdown_base_seconds": 0.2,
            "login_slowdown_max_seconds": 0.3,
            "login_max_failures": 10,
        }
    )
    async with app_client(create_app(slow)) as client:
        user = await register(client)
        durations = []
        for _ in range(5):
            started = time.perf_counter()
            await _attempt(client, user["email"], "wrong-password-1")
            durations.append(time.perf_counter() - started)

    # failures before each attempt: 0, 1 -> no delay; 2 -> 0.2 s; 3, 4 -> capped at 0.3 s
    assert durations[0] < 0.15
    assert durations[1] < 0.15
    assert durations[2] >= 0.2
    assert durations[3] >= 0.3
    assert durations[4] >= 0.3


@pytest.mark.parametrize(
    ("failures", "expected"), [(0, 0.0), (1, 0.0), (2, 0.25), (3, 0.5), (4, 1.0), (9, 2.0)]
)
def test_slowdown_doubles_per_failure_up_to_the_cap(failures, expected):
    settings = make_settings(
        "postgresql+asyncpg://unused/db",
        "unused:",
        login_slowdown_base_seconds=0.25,
        login_slowdown_max_seconds=2.0,
        login_slowdown_after=2,
    )

    assert slowdown_seconds(failures, settings) == expected


async def test_login_upgrades_a_hash_made_with_weaker_parameters(client, settings, migrated_url):
    user = await register(client)  # hashed with time_cost=1
    stronger = settings.model_copy(update={"argon2_time_cost": 2})
    async with app_client(create_app(stronger)) as other_replica:
        assert (await _attempt(other_replica, user["email"], PASSWORD)).status_code == 200

    engine = create_engine(migrated_url)
    try:
        async with session_factory(engine)() as session:
            stored = (await session.exec(select(User).where(User.email == user["email"]))).one()
    finally:
        await engine.dispose()
    assert ",t=2," in stored.password_hash
    assert (await _attempt(client, user["email"], PASSWORD)).status_code == 200


# Hashes slow enough (about 0.1 s each here) that a burst of logins is still hashing while the
# test looks at what else the service can do.
SLOW_HASH = {"argon2_time_cost": 4, "argon2_memory_kib": 32768}


async def test_a_flood_beyond_the_hashing_queue_is_refused_busy_at_once(settings):
    """Every caller beyond one per CPU (at least 2) and the queue gets 503 busy; none waits."""
    flood = settings.model_copy(update={**SLOW_HASH, "password_check_queue": 0})
    async with app_client(create_app(flood)) as client:
        attempts = [_attempt(client, unique_email("flood"), "wrong-password-1") for _ in range(12)]
        responses = await asyncio.gather(*attempts)

    statuses = sorted(r.status_code for r in responses)
    busy = [r for r in responses if r.status_code == 503]
    assert set(statuses) == {401, 503}, statuses
    assert 2 <= statuses.count(401) < 12
    assert {r.json()["error"] for r in busy} == {"busy"}
    assert {r.headers["Retry-After"] for r in busy} == {"1"}


async def test_logins_waiting_for_a_hash_hold_no_database_connection(settings):
    """Two database connections (pool 1, overflow 1), eight logins waiting to be hashed: a request
    that needs the database is still answered at once, not after the logins ahead of it."""
    crowded = settings.model_copy(update={**SLOW_HASH, "db_pool_size": 1})
    async with app_client(create_app(crowded)) as client:
        admin = bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        logins = [
            asyncio.create_task(_attempt(client, unique_email("crowd"), "wrong-password-1"))
            for _ in range(8)
        ]
        await asyncio.sleep(0.1)  # every login past its database read, queued for a hash
        listed = await client.get("/api/v1/users/", params={"limit": 1}, headers=admin)
        done_when_listed = sum(task.done() for task in logins)
        outcomes = [r.status_code for r in await asyncio.gather(*logins)]

    assert listed.status_code == 200
    assert outcomes == [401] * 8
    # holding their connections, the logins would have been answered first (7 at least): two
    # hashed at a time, the list waiting for the connection of the seventh
    assert done_when_listed <= 2
