"""Template injection and resource exhaustion are refused with a 422, never a 500, never a leak."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from libs.notification.message import Channel
from template_service.app import create_app
from template_service.errors import TemplateRenderFailed
from template_service.rendering import Content, RenderLimits, SandboxRenderer
from tests.support.isolation import temp_database, temp_redis_prefix
from tests.support.servers import app_client
from tests.template_service.conftest import TemplateApi, TokenFactory, make_settings, migrate
from tests.template_service.factories import email_template, push_template, unique_code

SECRET = "s3cr3t-" + "7f1c9e2ab4d8"
SECRET_ENV = "TEMPLATE_TEST_SECRET"

# Things that only show up when a template reached Python internals.
LEAK_MARKERS = (
    SECRET,
    "<class",
    "<function",
    "<module",
    "<built-in",
    "subprocess",
    "Popen",
    "os.environ",
    "site-packages",
    "/work/",
    "postgres@",
    "BEGIN RSA",
)

INJECTIONS = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__()[40]('/etc/passwd').read() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ joiner.__init__.__globals__['__builtins__']['__import__']('os').popen('id').read() }}",
    "{{ namespace.__init__.__globals__.os.getenv('" + SECRET_ENV + "') }}",
    "{{ range.__globals__ }}",
    "{{ range.__call__.__globals__['__builtins__'] }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ name.__class__.__init__.__globals__ }}",
    "{{ name.upper.__self__.__class__ }}",
    "{{ name.format.__func__ }}",
    "{{ (name|attr('__class__')).__mro__ }}",
    "{{ name|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ name['__class__'] }}",
    "{{ '{0.__class__.__mro__}'.format(name) }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ 'x'.format_map.__self__.__class__ }}",
    "{% set x = cycler.__init__ %}{{ x.__globals__ }}",
    "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ [1,2].append(3) }}{{ {}.update(a=1) }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os }}",
]

EXHAUSTION = [
    "{{ range(10**9) | list }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ [0] * 10**9 }}",
    "{{ 10 ** (10 ** 10) }}",
    "{{ 9 ** (9 ** 9) }}",
    "{{ 'x' | center(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x'.zfill(10**9) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%*d' | format(999999999, 1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ range(5) | batch(999999999, 'x') | list }}",
    "{{ ('x' * 100000) | replace('x', 'y' * 100000) }}",
    "{{ range(100000) | join('x' * 100000) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(64) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ d('x', 64) }}",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(n=7) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}"
    "{% endfor %}{{ ns.n }}",
    "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "{{ lipsum(10**8) }}",
]


@pytest.fixture(scope="module")
async def sandbox_api(auth_server: str, token_factory: TokenFactory) -> AsyncIterator[TemplateApi]:
    """A service whose process holds a secret in its settings and environment."""
    os.environ[SECRET_ENV] = SECRET
    try:
        async with temp_database("tplsbx") as url, temp_redis_prefix() as prefix:
            await migrate(url)
            settings = make_settings(url, prefix, auth_server).model_copy(
                update={"service_account_password": SECRET}
            )
            async with app_client(create_app(settings)) as client:
                yield TemplateApi(client, token_factory)
    finally:
        os.environ.pop(SECRET_ENV, None)


def _assert_no_leak(text: str) -> None:
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{marker!r} leaked: {text[:300]}"


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_injection_in_a_preview_is_refused(sandbox_api: TemplateApi, payload: str) -> None:
    response = await sandbox_api.preview(
        {"type": "push", "content": payload, "variables": {"name": "Ana"}}
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"] in ("template_error", "missing_variable")
    _assert_no_leak(response.text)


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ range.__globals__['__builtins__'] }}",
    ],
)
async def test_security_violations_are_template_errors(
    sandbox_api: TemplateApi, payload: str
) -> None:
    response = await sandbox_api.preview({"type": "push", "content": payload, "variables": {}})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "template_error"
    assert "unsafe" in body["message"]
    assert body["data"] == {"field": "body"}


@pytest.mark.parametrize("payload", INJECTIONS[:12])
async def test_saved_injection_fails_at_render_in_every_field(
    sandbox_api: TemplateApi, payload: str
) -> None:
    email, push = unique_code(), unique_code()
    await sandbox_api.create(email_template(email, subject=payload, content=f"<p>{payload}</p>"))
    await sandbox_api.create(push_template(push, image=None, link=payload))

    for code in (email, push):
        response = await sandbox_api.render(code, {"name": "Ana", "avatar": "a"})
        assert response.status_code == 422, response.text
        _assert_no_leak(response.text)


@pytest.mark.parametrize("payload", EXHAUSTION)
async def test_resource_exhaustion_is_refused_quickly(
    sandbox_api: TemplateApi, payload: str
) -> None:
    started = time.monotonic()

    response = await sandbox_api.preview({"type": "push", "content": payload, "variables": {}})

    assert response.status_code == 422, response.text[:300]
    assert response.json()["error"] in ("template_error", "missing_variable")
    assert time.monotonic() - started < 5
    _assert_no_leak(response.text)


async def test_the_service_keeps_answering_while_a_render_burns_its_budget(
    sandbox_api: TemplateApi,
) -> None:
    slow = sandbox_api.preview(
        {
            "type": "push",
            "content": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}"
            "{% endmacro %}{{ f(64) }}",
            "variables": {},
        }
    )
    slow_task = asyncio.ensure_future(slow)
    await asyncio.sleep(0.02)
    started = time.monotonic()
    health = await sandbox_api.request("GET", "/health", role=None)
    health_latency = time.monotonic() - started
    render_still_running = not slow_task.done()

    assert health.status_code == 200
    assert render_still_running
    assert (await slow_task).status_code == 422
    assert health_latency < 0.5


# ---------------------------------------------------------------------------------------------
# The renderer on its own: the limits bite where they should, ordinary templates are unaffected


def _body(renderer: SandboxRenderer, source: str, **variables: object) -> str | None:
    return renderer.render_sync(Content(type=Channel.PUSH, content=source), variables).body


@pytest.mark.unit
def test_ordinary_template_features_still_work() -> None:
    renderer = SandboxRenderer()
    source = (
        "{% macro money(v) %}{{ '%.2f' | format(v) }}{% endmacro %}"
        "{% set ns = namespace(total=0) %}"
        "{% for item in items | sort(attribute='name') %}"
        "{{ loop.index }}. {{ item.name | capitalize }}: {{ money(item.price) }}"
        "{% set ns.total = ns.total + item.price %}{{ ', ' if not loop.last }}"
        "{% endfor %} | total {{ money(ns.total) }} | {{ '{:,}'.format(big) }}"
        " | {{ names | join(', ') }} | {{ 'ab' * 3 }} | {{ 2 ** 10 }} | {{ 'x' | center(5) }}|"
    )
    items = [{"name": "tea", "price": 4}, {"name": "mug", "price": 7.5}]

    body = _body(renderer, source, items=items, big=1234567, names=["a", "b"])

    assert body == (
        "1. Mug: 7.50, 2. Tea: 4.00 | total 11.50 | 1,234,567 | a, b | ababab | 1024 |   x  |"
    )


@pytest.mark.unit
def test_step_budget_stops_long_loops() -> None:
    renderer = SandboxRenderer(RenderLimits(max_steps=1000))

    assert _body(renderer, "{% for i in range(900) %}{% endfor %}ok") == "ok"
    with pytest.raises(TemplateRenderFailed, match="too much work"):
        _body(renderer, "{% for i in range(1100) %}{% endfor %}ok")


@pytest.mark.unit
def test_deadline_stops_slow_renders() -> None:
    renderer = SandboxRenderer(RenderLimits(timeout_seconds=0.2, max_steps=10**9))
    started = time.monotonic()

    with pytest.raises(TemplateRenderFailed, match="took too long"):
        _body(
            renderer,
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        )

    assert time.monotonic() - started < 1.5


@pytest.mark.unit
def test_output_size_is_capped() -> None:
    renderer = SandboxRenderer(RenderLimits(max_output_chars=1000))

    assert len(_body(renderer, "{{ 'x' * 1000 }}") or "") == 1000
    with pytest.raises(TemplateRenderFailed, match="output"):
        _body(renderer, "{% for i in range(11) %}{{ 'x' * 100 }}{% endfor %}")


@pytest.mark.unit
def test_markup_format_in_html_still_escapes_its_arguments() -> None:
    renderer = SandboxRenderer()
    content = Content(
        type=Channel.EMAIL,
        subject="s",
        content="{{ ('<b>{}</b>' | safe).format(name) }} {{ '<i>%s</i>' | safe % name }}",
    )

    html = renderer.render_sync(content, {"name": "<script>"}).html

    assert html == "<b>&lt;script&gt;</b> <i>&lt;script&gt;</i>"
