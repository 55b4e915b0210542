"""Property tests of the sandboxed renderer (hypothesis): with any variables a client can send, and
any template an admin can write, rendering gives content or raises the service's own template
errors (422 ``missing_variable`` / ``template_error`` / ``template_syntax_error``), never another
exception; it never reaches Python internals, and HTML output is escaped."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from libs.notification.message import Channel
from template_service.errors import MissingVariable, TemplateRenderFailed, TemplateSyntaxProblem
from template_service.rendering import Content, RenderedContent, SandboxRenderer

pytestmark = pytest.mark.fuzz  # needs no server; make test and make test-fuzz run it

PROPERTY = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
RENDERER = SandboxRenderer()

NAMES = ["name", "items", "user", "count", "flag", "meta", "link"]
text = st.text(max_size=30) | st.sampled_from(
    ["<script>alert(1)</script>", "a & b", "\"'", "{{ x }}"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
variables = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), json_values, max_size=6)

TEMPLATES = [
    "Hello {{ name }}!",
    "{{ name|upper }} {{ name|title }} {{ name|e }} {{ name|truncate(5) }}",
    "{% for x in items %}[{{ x }}]{% endfor %}",
    "{{ items|join(', ') }} {{ items|length }} {{ items|sort|first }} {{ items|sum }}",
    "{{ user.name }} {{ user['email'] }} {{ meta.k }}",
    "{{ count * 3 }} {{ count + 1 }} {{ count ** 2 }} {{ count // 2 }} {{ count % 7 }}",
    "{{ name ~ items ~ count }} {{ '%s-%s'|format(name, count) }} {{ name * count }}",
    "{% if flag %}{{ name }}{% else %}{{ link }}{% endif %}",
    "{{ name[0] }} {{ name[1:3] }} {{ name|replace('a', 'bb') }} {{ name|center(count) }}",
    "{{ name.upper() }} {{ name.split(',') }} {{ name.format(count) }} {{ meta.items() }}",
    "{{ name.__class__ }} {{ items.__class__.__mro__ }} {{ user.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }} {{ namespace(a=name) }} {{ range(count) | list }}",
    "{{ name|default('x') }} {{ missing_variable_here }}",
]
FRAGMENTS = [
    "{{ ",
    " }}",
    "{% ",
    " %}",
    "for x in ",
    "endfor",
    "if ",
    "endif",
    "name",
    "items",
    "count",
    "x",
    "|upper",
    "|join(',')",
    "(",
    ")",
    "[",
    "]",
    ".",
    "__class__",
    "'s'",
    " * ",
    " ~ ",
    "9",
    ",",
    "<b>",
    "&",
    "range(",
    "loop.index",
    " %",
    "{#",
    "#}",
    "\n",
]
LEAKS = ("<class", "<function", "<module", "<built-in", "<bound method", "__globals__")


def _render(content: Content, values: dict[str, Any]) -> RenderedContent | None:
    """Rendered content, or None when the template error is the service's own (a 422)."""
    try:
        return RENDERER.render_sync(content, values)
    except (MissingVariable, TemplateRenderFailed, TemplateSyntaxProblem):
        return None


def _fields(rendered: RenderedContent) -> list[str]:
    return [v for v in vars(rendered).values() if isinstance(v, str)]


@PROPERTY
@given(source=st.sampled_from(TEMPLATES), values=variables, channel=st.sampled_from(list(Channel)))
def test_any_variables_render_or_raise_the_services_errors(
    source: str, values: dict[str, Any], channel: Channel
) -> None:
    content = (
        Content(type=Channel.EMAIL, subject=source, content=f"<p>{source}</p>", text=source)
        if channel is Channel.EMAIL
        else Content(type=Channel.PUSH, title=source, content=source, link=source)
    )

    rendered = _render(content, values)

    assume(not any(leak in json.dumps(values) for leak in LEAKS))
    if rendered is not None:
        for field in _fields(rendered):
            assert not any(leak in field for leak in LEAKS), field


@PROPERTY
@given(source=st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join), values=variables)
def test_any_template_source_compiles_and_renders_or_raises_the_services_errors(
    source: str, values: dict[str, Any]
) -> None:
    content = Content(type=Channel.EMAIL, subject=source, content=source)
    try:
        RENDERER.check_syntax(content)
    except TemplateSyntaxProblem:
        return
    rendered = _render(content, values)
    if rendered is not None and not any(leak in json.dumps(values) for leak in LEAKS):
        assert not any(leak in field for field in _fields(rendered) for leak in LEAKS)


@PROPERTY
@given(value=text | st.text(alphabet="<>&\"'`=/ ab", max_size=40))
def test_html_output_escapes_every_variable(value: str) -> None:
    content = Content(
        type=Channel.EMAIL, subject="{{ v }}", content='<p title="{{ v }}">{{ v }}</p>'
    )

    rendered = RENDERER.render_sync(content, {"v": value})

    safe = str(escape(value))
    assert rendered.html == f'<p title="{safe}">{safe}</p>'
    assert rendered.subject is not None
    assert "\n" not in rendered.subject  # a header-like field stays one line (no injection)
    assert "\r" not in rendered.subject
