"""The plain-text part derived from an email's HTML."""

from __future__ import annotations

import pytest

from template_service.plaintext import html_to_text

pytestmark = pytest.mark.unit


def test_paragraphs_breaks_and_links() -> None:
    html = (
        "<p>Hi <b>Ana</b>,\n   please   <a href='https://x.test/c?a=1&amp;b=2'>confirm</a>.</p>"
        "<p>Line one<br>Line two<br/>Line three</p>"
    )
    assert html_to_text(html) == (
        "Hi Ana, please confirm (https://x.test/c?a=1&b=2).\n\nLine one\nLine two\nLine three"
    )


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ('<a href="https://x.test">https://x.test</a>', "https://x.test"),
        ('<a href="https://x.test/">https://x.test</a>', "https://x.test"),
        ('<a href="mailto:help@x.test">help@x.test</a>', "help@x.test"),
        ('<a href="mailto:help@x.test">Write to us</a>', "Write to us (mailto:help@x.test)"),
        ('<a href="#top">Back to top</a>', "Back to top"),
        ('<a href="javascript:void(0)">Click</a>', "Click"),
        ('<a href="https://x.test/i"><img src="i.png" alt=""></a>', "https://x.test/i"),
        ('<a href="https://x.test/i"><img src="i.png" alt="Logo"></a>', "Logo (https://x.test/i)"),
        ("<a>no target</a>", "no target"),
    ],
)
def test_link_targets(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_entities_are_unescaped() -> None:
    html = (
        "<p>Tom &amp; Jerry &lt;3 &quot;cheese&quot; &#39;n&#39; &euro;5 &#x1F600; caf&eacute;</p>"
    )
    assert html_to_text(html) == "Tom & Jerry <3 \"cheese\" 'n' €5 😀 café"


def test_head_style_and_script_are_dropped() -> None:
    html = (
        "<html><head><title>Subject</title><style>p { color: red }</style></head>"
        "<body><script>alert('x')</script><p>Visible</p><noscript>nojs</noscript></body></html>"
    )
    assert html_to_text(html) == "Visible"


def test_lists_headings_and_tables() -> None:
    html = (
        "<h1>Your order</h1><ul><li>2 x tea</li><li>1 x mug</li></ul>"
        "<table><tr><th>Item</th><th>Price</th></tr><tr><td>tea</td><td>4.00</td></tr></table>"
        "<div>Thanks</div><div>The team</div>"
    )
    assert html_to_text(html) == (
        "Your order\n\n- 2 x tea\n- 1 x mug\n\nItem Price\ntea 4.00\n\nThanks\nThe team"
    )


def test_preformatted_text_keeps_its_spacing() -> None:
    html = "<p>Code:</p><pre>line 1\n    indented</pre><p>after</p>"
    assert html_to_text(html) == "Code:\n\nline 1\n    indented\n\nafter"


def test_right_to_left_and_non_latin_text_survive() -> None:
    html = "<p dir='rtl'>مرحبا <b>سارة</b></p><p>שלום\u200f עולם</p><p>ようこそ 🎉</p>"
    assert html_to_text(html) == "مرحبا سارة\n\nשלום\u200f עולם\n\nようこそ 🎉"  # noqa: RUF001


def test_broken_html_does_not_raise() -> None:
    assert html_to_text("<p>unclosed <b>bold <a href='x'>link") == "unclosed bold link (x)"
    assert html_to_text("") == ""
    assert html_to_text("plain & simple") == "plain & simple"
