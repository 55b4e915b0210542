"""Every service's OpenAPI documents its error responses as the envelope they really are."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from dlq_service.app import create_app as dlq
from email_service.app import create_app as email
from gateway.app import create_app as gateway
from libs.http.app import create_app
from libs.http.envelope import MAX_PAGE, ErrorEnvelope, Pagination
from push_service.app import create_app as push
from template_service.app import create_app as templates
from user_service.app import create_app as users

pytestmark = pytest.mark.unit

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorEnvelope"}


@pytest.mark.parametrize(
    "factory", [gateway, users, templates, dlq, email, push], ids=lambda f: f.__module__
)
def test_every_error_response_is_documented_as_the_error_envelope(
    factory: Callable[[], FastAPI],
) -> None:
    spec = factory().openapi()

    errors = [
        (path, method, status, response)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status[0] in "45"
    ]
    assert errors
    for path, method, status, response in errors:
        schema = response["content"]["application/json"]["schema"]
        assert schema == ERROR_SCHEMA, (path, method, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


class Body(BaseModel):
    name: str


async def test_a_validation_error_matches_the_documented_envelope() -> None:
    router = APIRouter()

    @router.post("/things")
    async def things(body: Body) -> dict[str, str]:
        return {"name": body.name}

    app = create_app(service="t", title="t", lifespan=None, routers=[router])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/things", json={"name": 1})

    assert response.status_code == 422
    documented = app.openapi()["paths"]["/things"]["post"]["responses"]["422"]
    assert documented["content"]["application/json"]["schema"] == ERROR_SCHEMA
    error = ErrorEnvelope.model_validate(response.json())  # data {"errors": [...]} fits
    assert error.data is not None
    assert error.data["errors"][0]["field"] == "name"


def test_pages_are_bounded() -> None:
    assert Pagination(page=MAX_PAGE).offset < 2**63
    with pytest.raises(ValueError, match="less than or equal"):
        Pagination(page=MAX_PAGE + 1)
