"""The FCM provider against a local server speaking FCM's v1 API and the OAuth token endpoint."""

from __future__ import annotations

import pytest

from devtools.fcm_stub import FcmStubState, create_fcm_stub, service_account
from libs.delivery.providers import (
    OutcomeUnknown,
    PermanentProviderError,
    RecipientGone,
    TransientProviderError,
)
from push_service.providers.fcm import AccessTokens, FcmProvider
from tests.support.servers import free_port, live_server


@pytest.fixture
async def fcm():
    state = FcmStubState()
    port = free_port()
    async with live_server(create_fcm_stub(state), port=port) as url:
        yield state, url


@pytest.fixture
async def provider(fcm):
    _state, url = fcm
    account = service_account(f"{url}/token", project_id="demo-project")
    provider = FcmProvider(project_id="demo-project", base_url=url, tokens=AccessTokens(account))
    yield provider
    await provider.close()


def message(token: str = "device-1") -> dict[str, object]:
    return {"token": token, "notification": {"title": "Hi", "body": "There"}, "data": {"k": "v"}}


async def test_send_authenticates_with_an_oauth_token_and_returns_the_message_name(fcm, provider):
    state, _ = fcm
    result = await provider.send(message())
    assert result.provider == "fcm"
    assert result.provider_message_id.startswith("projects/demo-project/messages/")
    assert state.token_requests == 1
    assert state.delivered_to("device-1")[0]["notification"] == {"title": "Hi", "body": "There"}
    await provider.send(message())
    assert state.token_requests == 1  # the access token is reused until it expires


async def test_unregistered_token_is_gone(provider):
    with pytest.raises(RecipientGone) as error:
        await provider.send(message("dead-abc"))
    assert error.value.code == "unregistered"


async def test_invalid_token_is_gone_and_other_invalid_arguments_are_permanent(provider):
    with pytest.raises(RecipientGone):
        await provider.send(message("invalid-abc"))
    bad = message() | {"data": {"count": 3}}
    with pytest.raises(PermanentProviderError) as error:
        await provider.send(bad)
    assert not isinstance(error.value, RecipientGone)
    assert error.value.code == "invalid_argument"


@pytest.mark.parametrize(("mode", "status"), [("unavailable", 503), ("rate_limited", 429)])
async def test_overload_is_transient_and_carries_retry_after(fcm, provider, mode, status):
    state, _ = fcm
    state.mode, state.retry_after = mode, 7
    with pytest.raises(TransientProviderError) as error:
        await provider.send(message())
    assert str(status) in str(error.value)
    assert error.value.retry_after_ms == 7000


async def test_revoked_access_token_is_refreshed_once(fcm, provider):
    state, _ = fcm
    await provider.send(message())
    state.issued.clear()  # the server forgot our token
    await provider.send(message())
    assert state.token_requests == 2


async def test_unreachable_fcm_is_transient():
    account = service_account("http://127.0.0.1:9/token")
    provider = FcmProvider(
        project_id="p", base_url="http://127.0.0.1:9", tokens=AccessTokens(account), timeout=1
    )
    try:
        with pytest.raises(TransientProviderError):
            await provider.send(message())
    finally:
        await provider.close()


async def test_fcm_taking_the_message_and_answering_too_late_is_an_unknown_outcome(fcm):
    # the request was written and no answer came: FCM may have delivered it, so it must not be
    # resent (OutcomeUnknown, never Transient, which would retry)
    state, url = fcm
    state.mode, state.answer_after = "slow", 3.0
    account = service_account(f"{url}/token", project_id="demo-project")
    provider = FcmProvider(
        project_id="demo-project", base_url=url, tokens=AccessTokens(account), timeout=0.5
    )
    try:
        with pytest.raises(OutcomeUnknown):
            await provider.send(message("device-9"))
    finally:
        await provider.close()
    assert len(state.delivered_to("device-9")) == 1


async def test_answers_that_are_not_fcm_json_are_classified_by_their_status():
    """A proxy's HTML error page is a transient error naming the status; a 200 whose body is
    unreadable is still a send (only its message id is missing), never a resend."""
    from fastapi import FastAPI, Response

    answers = iter([(503, b"<html>Bad gateway</html>"), (200, b"not json")])
    stub = FastAPI()

    @stub.post("/v1/projects/p/messages:send")
    async def send() -> Response:
        status, body = next(answers)
        return Response(body, status_code=status, media_type="text/html")

    async with live_server(stub, port=free_port()) as url:
        account = service_account(f"{url}/token", project_id="p")
        tokens = AccessTokens(account)
        tokens._credentials.token = "static"  # no OAuth endpoint on this stub
        tokens._credentials.expiry = None
        provider = FcmProvider(project_id="p", base_url=url, tokens=tokens, timeout=2)
        try:
            with pytest.raises(TransientProviderError) as error:
                await provider.send(message())
            assert "503" in str(error.value)
            result = await provider.send(message())
            assert result.provider == "fcm"
            assert result.provider_message_id is None
        finally:
            await provider.close()
