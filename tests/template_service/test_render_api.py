"""Rendering over HTTP: the shape delivery services parse, escaping, plain text, variables."""

from __future__ import annotations

from typing import Any

import pytest

from libs.clients.models import Rendered
from tests.template_service.conftest import TemplateApi
from tests.template_service.factories import email_template, push_template, unique_code

RENDER_KEYS = {
    "code",
    "version",
    "language",
    "type",
    "subject",
    "html",
    "text",
    "title",
    "body",
    "image",
    "link",
}


async def _render_ok(api: TemplateApi, code: str, variables: dict[str, Any], **extra: Any) -> Any:
    response = await api.render(code, variables, **extra)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def test_email_render_has_exactly_the_contract_fields(shared_api: TemplateApi) -> None:
    code = unique_code()
    await shared_api.create(email_template(code))

    data = await _render_ok(shared_api, code, {"name": "Ana", "link": "https://herald.test/go"})

    assert set(data) == RENDER_KEYS
    assert data == {
        "code": code,
        "version": 1,
        "language": "en",
        "type": "email",
        "subject": "Welcome, Ana!",
        "html": '<p>Hello Ana,</p><p><a href="https://herald.test/go">Get started</a></p>',
        "text": "Hello Ana,\n\nGet started (https://herald.test/go)",
        "title": None,
        "body": None,
        "image": None,
        "link": None,
    }
    assert Rendered.model_validate(data).subject == "Welcome, Ana!"  # what consumers parse


async def test_push_render_has_title_body_image_link(shared_api: TemplateApi) -> None:
    code = unique_code()
    await shared_api.create(push_template(code))

    data = await _render_ok(
        shared_api,
        code,
        {"name": "Ana", "avatar": "ana-42", "link": "herald://inbox/7"},
    )

    assert data == {
        "code": code,
        "version": 1,
        "language": "en",
        "type": "push",
        "subject": None,
        "html": None,
        "text": None,
        "title": "Hi Ana",
        "body": "Welcome aboard, Ana!",
        "image": "https://cdn.example.com/ana-42.png",
        "link": "herald://inbox/7",
    }


async def test_push_without_image_and_link_renders_them_as_null(shared_api: TemplateApi) -> None:
    code = unique_code()
    await shared_api.create(push_template(code, image=None, link=None))

    data = await _render_ok(shared_api, code, {"name": "Ana"})

    assert (data["image"], data["link"]) == (None, None)


async def test_explicit_text_part_is_rendered_instead_of_derived(shared_api: TemplateApi) -> None:
    code = unique_code()
    await shared_api.create(email_template(code, text="Hi {{ name }} & co: {{ link }}"))

    data = await _render_ok(shared_api, code, {"name": "<Ana>", "link": "https://x.test/?a=1&b=2"})

    assert data["text"] == "Hi <Ana> & co: https://x.test/?a=1&b=2"


async def test_render_a_given_version(shared_api: TemplateApi) -> None:
    code = unique_code()
    await shared_api.create(push_template(code, content="one {{ name }}"))
    await shared_api.update(code, {"content": "two {{ name }}"})

    old = await _render_ok(shared_api, code, {"name": "A", "avatar": "x", "link": "y"}, version=1)
    new = await _render_ok(shared_api, code, {"name": "A", "avatar": "x", "link": "y"})

    assert (old["version"], old["body"]) == (1, "one A")
    assert (new["version"], new["body"]) == (2, "two A")


@pytest.mark.parametrize(
    ("overrides", "variables", "missing"),
    [
        ({}, {"link": "https://x"}, "name"),
        ({"content": "<p>{{ greeting }} {{ name }}</p>"}, {"name": "A"}, "greeting"),
        ({"subject": "{{ order_id }} shipped"}, {"name": "A", "link": "l"}, "order_id"),
        ({"text": "{{ footer }}"}, {"name": "A", "link": "l"}, "footer"),
        ({"content": "{% for i in items %}{{ i }}{% endfor %}"}, {"name": "A"}, "items"),
        ({"content": "{% if vip %}VIP{% endif %}"}, {"name": "A"}, "vip"),
        ({"content": "{{ user.email }}"}, {"name": "A", "user": {"id": 1}}, "email"),
    ],
    ids=["html", "html-first", "subject", "text", "loop", "condition", "attribute"],
)
async def test_missing_variable_is_422_naming_it(
    shared_api: TemplateApi, overrides: dict[str, str], variables: dict[str, Any], missing: str
) -> None:
    code = unique_code()
    await shared_api.create(email_template(code, **overrides))

    response = await shared_api.render(code, variables)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "missing_variable"
    assert body["message"] == f"Template variable '{missing}' is undefined"
    assert body["data"] == {"variable": missing}


async def test_missing_push_link_variable_is_422(shared_api: TemplateApi) -> None:
    code = unique_code()
    await shared_api.create(push_template(code))

    response = await shared_api.render(code, {"name": "A", "avatar": "a"})

    assert response.status_code == 422
    assert response.json()["data"] == {"variable": "link"}


async def test_defaults_and_tests_for_optional_variables_work(shared_api: TemplateApi) -> None:
    code = unique_code()
    content = (
        "<p>Hi {{ name | default('there') }}"
        "{% if coupon is defined %}, use {{ coupon }}{% endif %}.</p>"
    )
    await shared_api.create(email_template(code, subject="Hi", content=content))

    bare = await _render_ok(shared_api, code, {})
    full = await _render_ok(shared_api, code, {"name": "Ana", "coupon": "X1"})

    assert bare["html"] == "<p>Hi there.</p>"
    assert full["html"] == "<p>Hi Ana, use X1.</p>"


async def test_structured_variables_loops_and_filters(shared_api: TemplateApi) -> None:
    code = unique_code()
    content = (
        "<ul>{% for item in order['items'] %}<li>{{ item.qty }} x {{ item.name | title }}"
        " = {{ '%.2f' | format(item.qty * item.price) }}</li>{% endfor %}</ul>"
        "<p>Total: {{ order['items'] | sum(attribute='price') }} {{ order.currency | upper }}</p>"
    )
    await shared_api.create(email_template(code, subject="Order {{ order.id }}", content=content))
    order = {
        "id": 1042,
        "currency": "eur",
        "items": [
            {"name": "blue mug", "qty": 2, "price": 7.5},
            {"name": "tea", "qty": 1, "price": 4},
        ],
    }

    data = await _render_ok(shared_api, code, {"order": order})

    assert data["subject"] == "Order 1042"
    assert data["html"] == (
        "<ul><li>2 x Blue Mug = 15.00</li><li>1 x Tea = 4.00</li></ul><p>Total: 11.5 EUR</p>"
    )
    assert data["text"] == "- 2 x Blue Mug = 15.00\n- 1 x Tea = 4.00\n\nTotal: 11.5 EUR"


async def test_html_in_variables_is_escaped_only_in_the_html_body(shared_api: TemplateApi) -> None:
    email = unique_code()
    push = unique_code()
    await shared_api.create(
        email_template(
            email,
            subject="Re: {{ topic }}",
            text="Topic: {{ topic }}",
            content="<p>Topic: {{ topic }}</p><a href='{{ url }}'>open</a>",
        )
    )
    await shared_api.create(
        push_template(push, title="{{ topic }}", content="{{ topic }}", image=None, link=None)
    )
    topic = "<script>alert('x')</script> & \"Tom's\""
    url = "javascript:alert(1)' onmouseover='x"

    mail = await _render_ok(shared_api, email, {"topic": topic, "url": url})
    note = await _render_ok(shared_api, push, {"topic": topic})

    assert "<script>" not in mail["html"]
    assert (
        "<p>Topic: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;Tom&#39;s&#34;</p>"
        in mail["html"]
    )
    assert "href='javascript:alert(1)&#39; onmouseover=&#39;x'" in mail["html"]
    assert mail["subject"] == f"Re: {topic}"
    assert mail["text"] == f"Topic: {topic}"
    assert (note["title"], note["body"]) == (topic, topic)


async def test_derived_text_unescapes_what_the_html_escaped(shared_api: TemplateApi) -> None:
    code = unique_code()
    await shared_api.create(email_template(code))

    data = await _render_ok(
        shared_api, code, {"name": "Tom & <Jerry>", "link": "https://x/?a=1&b=2"}
    )

    assert "Tom &amp; &lt;Jerry&gt;" in data["html"]
    assert data["text"] == "Hello Tom & <Jerry>,\n\nGet started (https://x/?a=1&b=2)"


async def test_line_breaks_in_a_subject_variable_cannot_add_headers(
    shared_api: TemplateApi,
) -> None:
    code = unique_code()
    await shared_api.create(email_template(code))

    data = await _render_ok(
        shared_api, code, {"name": "Ana\r\nBcc: victim@example.com", "link": "l"}
    )

    assert data["subject"] == "Welcome, Ana Bcc: victim@example.com!"


@pytest.mark.parametrize(
    ("language", "subject", "name"),
    [
        ("ar", "مرحبا {{ name }}!", "سارة"),
        ("he", "שלום {{ name }}", "דוד"),
        ("ja", "ようこそ、{{ name }}さん", "山田太郎"),
        ("zh-Hant-TW", "歡迎 {{ name }}", "陳小明"),
        ("hi", "स्वागत है {{ name }}", "अनीता"),
        ("en", "Party time {{ name }} 🎉👩🏽‍💻", "Zoë 🇵🇹 \u200fא\u200e"),
    ],
)
async def test_non_latin_and_right_to_left_text_is_rendered_intact(
    shared_api: TemplateApi, language: str, subject: str, name: str
) -> None:
    code = unique_code()
    content = f'<p dir="auto">{subject}</p>'
    await shared_api.create(
        email_template(code, language=language, subject=subject, content=content)
    )
    expected = subject.replace("{{ name }}", name)

    data = await _render_ok(shared_api, code, {"name": name}, language=language)
    stored = (
        await shared_api.request("GET", f"/api/v1/templates/{code}", params={"language": language})
    ).json()["data"]

    assert data["language"] == language
    assert data["subject"] == expected
    assert data["html"] == f'<p dir="auto">{expected}</p>'
    assert data["text"] == expected
    assert stored["subject"] == subject


async def test_render_request_is_validated(shared_api: TemplateApi) -> None:
    code = unique_code()
    await shared_api.create(push_template(code))
    url = f"/api/v1/templates/{code}/render"

    cases = [
        {"variables": "not an object"},
        {"variables": {}, "langauge": "pt"},
        {"variables": {}, "language": "not a language"},
        {"variables": {}, "version": 0},
        {"variables": {}, "version": 2**40},
    ]
    for body in cases:
        response = await shared_api.request("POST", url, role="service", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "validation_error"


@pytest.mark.parametrize(("depth", "status"), [(100, 200), (5000, 400)])
async def test_deeply_nested_variables_do_not_crash_the_service(
    shared_api: TemplateApi, depth: int, status: int
) -> None:
    code = unique_code()
    await shared_api.create(
        push_template(code, content="{{ name }} {{ deep | length }}", image=None, link=None)
    )
    nested = "[" * depth + "]" * depth
    body = f'{{"variables": {{"name": "A", "deep": {nested}}}}}'.encode()

    response = await shared_api.request(
        "POST",
        f"/api/v1/templates/{code}/render",
        role="service",
        content=body,
        headers={"content-type": "application/json"},
    )

    assert response.status_code == status, response.text[:300]
    assert response.json()["success"] is (status == 200)


async def test_preview_renders_without_saving(shared_api: TemplateApi) -> None:
    code_guess = "preview"
    body = {
        "type": "email",
        "subject": "Hi {{ name }}",
        "content": "<h1>Hello {{ name }}</h1><p>Line&nbsp;one<br>Line two</p>",
        "variables": {"name": "Ana"},
    }

    response = await shared_api.preview(body)

    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == RENDER_KEYS
    assert (data["subject"], data["html"]) == (
        "Hi Ana",
        "<h1>Hello Ana</h1><p>Line&nbsp;one<br>Line two</p>",
    )
    assert data["text"] == "Hello Ana\n\nLine one\nLine two"
    assert (data["code"], data["version"], data["type"]) == (code_guess, 0, "email")
    stored = await shared_api.request("GET", "/api/v1/templates/preview")
    assert stored.status_code == 404


async def test_preview_push(shared_api: TemplateApi) -> None:
    response = await shared_api.preview(
        {"type": "push", "subject": "T {{ n }}", "content": "B {{ n }}", "variables": {"n": "<1>"}}
    )
    data = response.json()["data"]
    assert (data["title"], data["body"], data["html"]) == ("T <1>", "B <1>", None)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"type": "push", "content": "{{ x ", "variables": {}}, 400, "template_syntax_error"),
        ({"type": "push", "content": "{{ x }}", "variables": {}}, 422, "missing_variable"),
        ({"type": "email", "content": "<p>x</p>", "variables": {}}, 422, "validation_error"),
        ({"type": "push", "content": "x", "variables": {}, "code": "x"}, 422, "validation_error"),
    ],
    ids=["syntax", "missing-variable", "email-without-subject", "unknown-field"],
)
async def test_preview_errors(
    shared_api: TemplateApi, body: dict[str, Any], status: int, error: str
) -> None:
    response = await shared_api.preview(body)
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"] == error
