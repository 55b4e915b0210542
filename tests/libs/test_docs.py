"""The API docs pages work without internet: every asset they load comes from the service."""

from __future__ import annotations

import re

import pytest
from fastapi import APIRouter, FastAPI

from libs.http.app import create_app
from libs.http.docs import install_offline_docs
from tests.support.pages import asset_urls, external_references
from tests.support.servers import app_client

pytestmark = pytest.mark.unit

router = APIRouter()


@router.get("/api/v1/things/{thing_id}")
async def read_thing(thing_id: int) -> dict[str, int]:
    return {"thing_id": thing_id}


def _app() -> FastAPI:
    return create_app(service="docs_test", title="Docs test", lifespan=None, routers=[router])


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js": "javascript", "swagger-ui.css": "css"}),
        ("/redoc", {"redoc.standalone.js": "javascript"}),
    ],
)
async def test_doc_pages_load_only_local_assets(page, assets):
    async with app_client(_app()) as client:
        response = await client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert external_references(html) == []
        # no CDN or web font anywhere in the page, not only in tags
        assert re.search(r"https?://", html) is None, html
        urls = asset_urls(html)
        assert {url.rsplit("/", 1)[-1] for url in urls} >= set(assets) | {"favicon.png"}
        for url in urls:
            fetched = await client.get(url)
            assert fetched.status_code == 200, url
            name = url.rsplit("/", 1)[-1]
            if name in assets:
                assert assets[name] in fetched.headers["content-type"], url
                assert len(fetched.content) > 100_000, url  # the real bundle, not a stub


async def test_swagger_ui_is_pointed_at_the_schema_and_the_schema_still_works():
    async with app_client(_app()) as client:
        page = (await client.get("/docs")).text
        assert "url: '/openapi.json'" in page
        schema = await client.get("/openapi.json")
        assert schema.status_code == 200
        paths = schema.json()["paths"]
        assert "/api/v1/things/{thing_id}" in paths
        assert not any(path.startswith(("/docs", "/redoc")) for path in paths)


async def test_a_missing_asset_is_an_enveloped_404():
    async with app_client(_app()) as client:
        response = await client.get("/docs/assets/no-such-file.js")
        assert response.status_code == 404
        body = response.json()
        assert body["success"] is False
        assert set(body) == {"success", "data", "error", "message", "meta"}


async def test_oauth2_redirect_page_is_served_for_swagger_ui():
    async with app_client(_app()) as client:
        response = await client.get("/docs/oauth2-redirect")
        assert response.status_code == 200
        assert "oauth2" in response.text.lower()


def test_an_app_with_fastapis_cdn_pages_is_refused():
    with pytest.raises(ValueError, match="docs_url=None"):
        install_offline_docs(FastAPI())
