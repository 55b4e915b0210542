"""Sandboxed rendering of template fields with Jinja2.

Templates are written by admins but rendered inside every delivery, so a template must neither reach
Python internals nor take the service down. Three layers keep it contained:

- ``ImmutableSandboxedEnvironment`` refuses attributes starting with ``_`` and the internals of
  functions, frames and generators (``__class__``, ``__globals__``, ``func_code`` ...), and mutation
  of lists and dicts; such an access raises ``SecurityError``.
- Work is bounded: every loop iteration, call and filter spends one step of a per-render budget,
  which also carries a wall-clock deadline; operators and filters that can build huge values in one
  step (``'x' * n``, ``2 ** n``, ``center(n)``, ``'%99999s'``, ``replace``, ``join``) are checked
  before they run and every intermediate value is capped in size, as is the output of a field.
- ``StrictUndefined``: a variable the caller did not send is an error naming it, not an empty
  string.

Rendering runs in a worker thread, so the event loop keeps serving while a slow template exhausts
its budget.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn

from jinja2 import StrictUndefined, Template, nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from libs.notification.message import Channel
from template_service.errors import MissingVariable, TemplateRenderFailed, TemplateSyntaxProblem
from template_service.plaintext import html_to_text


@dataclass(frozen=True)
class RenderLimits:
    """How much one render may do; generous for real templates, fatal for bombs."""

    timeout_seconds: float = 2.0
    # loop iterations + calls + filter applications + intercepted operators, all fields together
    max_steps: int = 200_000
    # length of any intermediate string, list or dict
    max_value_size: int = 1_000_000
    # length of one rendered field
    max_output_chars: int = 1_000_000
    # padding widths, batch sizes, printf/format widths
    max_width: int = 10_000
    # size of integers built with * and **
    max_int_bits: int = 10_000


@dataclass(frozen=True)
class Content:
    """The template fields of one version. ``content`` is the email HTML or the push body."""

    type: Channel
    content: str
    subject: str | None = None
    text: str | None = None
    title: str | None = None
    image: str | None = None
    link: str | None = None

    def sources(self) -> list[tuple[str, str, bool]]:
        """``(field, source, html_escaped)`` for each template field that is set.

        Fields are named as in the rendered output (``html`` for email content, ``body`` for push).
        """
        if self.type is Channel.EMAIL:
            fields = [("subject", self.subject, False), ("html", self.content, True)]
            fields.append(("text", self.text, False))
        else:
            fields = [
                ("title", self.title, False),
                ("body", self.content, False),
                ("image", self.image, False),
                ("link", self.link, False),
            ]
        return [(name, source, escaped) for name, source, escaped in fields if source is not None]


@dataclass(frozen=True)
class RenderedContent:
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    title: str | None = None
    body: str | None = None
    image: str | None = None
    link: str | None = None


# ---------------------------------------------------------------------------------------------
# Budget


class RenderBudgetExceeded(SecurityError):
    """The template tried to do more work or build bigger values than a render may."""


class _Budget:
    __slots__ = ("_deadline", "_steps_left")

    def __init__(self, limits: RenderLimits) -> None:
        self._deadline = time.monotonic() + limits.timeout_seconds
        self._steps_left = limits.max_steps

    def step(self) -> None:
        self._steps_left -= 1
        if self._steps_left < 0:
            raise RenderBudgetExceeded("the template does too much work (loops, calls, filters)")
        if time.monotonic() > self._deadline:
            raise RenderBudgetExceeded("rendering took too long")


# Set while a render runs (in the worker thread's context); None at compile time.
_budget: ContextVar[_Budget | None] = ContextVar("template_render_budget", default=None)


def _step() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.step()


def _too_big(what: str) -> NoReturn:
    raise RenderBudgetExceeded(f"{what} exceeds the render limits")


# ---------------------------------------------------------------------------------------------
# Undefined variables


class _UndefinedVariable(UndefinedError):
    def __init__(self, message: str, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


def _fail_undefined(self: Undefined, *args: Any, **kwargs: Any) -> NoReturn:
    """Like ``Undefined._fail_with_undefined_error`` but says which variable was missing."""
    name = self._undefined_name
    if self._undefined_exception is UndefinedError and name is not None:
        raise _UndefinedVariable(self._undefined_message, str(name))
    raise self._undefined_exception(self._undefined_message)


class _StrictUndefined(StrictUndefined):
    __slots__ = ()
    _fail_with_undefined_error = _fail_undefined


# StrictUndefined binds its dunders (__str__, __iter__, __eq__ ...) to the base class function, so
# overriding the method alone would not reach them.
for _name in dir(StrictUndefined):
    if getattr(StrictUndefined, _name, None) is Undefined._fail_with_undefined_error:
        setattr(_StrictUndefined, _name, _fail_undefined)


# ---------------------------------------------------------------------------------------------
# The environment

_ITER_GUARD = "guard:iter"  # not a valid filter name in template source, so templates cannot use it
_SIZE_GUARD = "guard:size"
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _limits(context: Context) -> RenderLimits:
    env = context.environment
    assert isinstance(env, _SandboxedEnvironment)
    return env.limits


def _check_size(value: Any, limits: RenderLimits) -> Any:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        if len(value) > limits.max_value_size:
            _too_big("a value")
    elif isinstance(value, int) and value.bit_length() > limits.max_int_bits:
        _too_big("an integer")
    return value


def _check_width(value: Any, limits: RenderLimits) -> None:
    if isinstance(value, int) and abs(value) > limits.max_width:
        _too_big(f"width {value}")
    if isinstance(value, str) and len(value) > limits.max_width:
        _too_big("a padding string")


def _check_printf(fmt: Any, limits: RenderLimits) -> None:
    if not isinstance(fmt, str):
        return
    for match in _PRINTF_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*":
                _too_big("a '*' width")
            if number is not None:
                _check_width(int(number), limits)


def _check_replace(s: Any, old: Any, new: Any, limits: RenderLimits) -> None:
    s, old, new = str(s), str(old), str(new)
    occurrences = s.count(old) if old else len(s) + 1
    if len(s) + occurrences * max(0, len(new) - len(old)) > limits.max_value_size:
        _too_big("the replaced string")


def _materialized_join(separator: Any, items: Any, limits: RenderLimits) -> Sequence[Any]:
    """The items to join as a sequence, once the joined length is known to be within limits."""
    if not isinstance(items, Sized):
        items = list(items) if isinstance(items, Iterable) else items
    if isinstance(items, Sized):
        if len(items) > limits.max_value_size:
            _too_big("a join")
        total = len(str(separator)) * len(items)
        if total > limits.max_value_size:
            _too_big("the joined string")
    return items  # type: ignore[no-any-return]


@pass_context
def _guard_iterable(context: Context, iterable: Any) -> Iterator[Any]:
    """Wraps every ``{% for %}`` iterable: one budget step per iteration."""
    budget = _budget.get()
    for item in iterable:
        if budget is not None:
            budget.step()
        yield item


@pass_context
def _guard_size(context: Context, value: Any) -> Any:
    """Wraps every ``~`` concatenation."""
    return _check_size(value, _limits(context))


def _filter_precheck(
    name: str, limits: RenderLimits, args: list[Any], kwargs: dict[str, Any]
) -> None:
    """Refuse filter arguments that would build a huge value in one go (``args`` excludes the
    context/environment argument)."""
    if name == "center":
        _check_width(args[1] if len(args) > 1 else kwargs.get("width"), limits)
    elif name == "indent":
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        _check_width(width, limits)
        pad = len(width) if isinstance(width, str) else int(width or 0)
        lines = str(args[0]).count("\n") + 1 if args else 1
        if pad * lines > limits.max_value_size:
            _too_big("the indented string")
    elif name in ("batch", "slice"):
        key = "linecount" if name == "batch" else "slices"
        _check_width(args[1] if len(args) > 1 else kwargs.get(key), limits)
    elif name == "format":
        if args:
            _check_printf(args[0], limits)
    elif name == "replace" and len(args) >= 3:
        _check_replace(args[0], args[1], args[2], limits)
    elif name == "join" and args:
        separator = args[1] if len(args) > 1 else kwargs.get("d", "")
        args[0] = _materialized_join(separator, args[0], limits)


def _guarded_filter(
    name: str, func: Callable[..., Any], limits: RenderLimits
) -> Callable[..., Any]:
    takes_context = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja passes the same first argument
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _step()
        head, rest = (args[:1], list(args[1:])) if takes_context else ((), list(args))
        _filter_precheck(name, limits, rest, kwargs)
        return _check_size(func(*head, *rest, **kwargs), limits)

    return guarded


class _InsertGuards(NodeTransformer):
    """Route loops and concatenations through the guard filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 (NodeVisitor naming)
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _ITER_GUARD, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return nodes.Filter(node, _SIZE_GUARD, [], [], None, None, lineno=node.lineno)


class _FormatSpecGuard(SandboxedFormatter):
    limits: RenderLimits

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):
            _check_width(int(number), self.limits)
        return super().format_field(value, format_spec)


class _EscapingFormatSpecGuard(_FormatSpecGuard, SandboxedEscapeFormatter):
    pass


class _SandboxedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, autoescape: bool, limits: RenderLimits) -> None:
        super().__init__(autoescape=autoescape, undefined=_StrictUndefined, cache_size=0)
        self.limits = limits
        # lipsum(n) builds text of any size; nothing else in the default globals is costly.
        self.globals.pop("lipsum", None)
        self.filters = {
            name: _guarded_filter(name, func, limits) for name, func in self.filters.items()
        }
        self.filters[_ITER_GUARD] = _guard_iterable
        self.filters[_SIZE_GUARD] = _guard_size

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _InsertGuards().visit(super()._parse(source, name, filename))
        assert isinstance(tree, nodes.Template)
        tree.set_environment(self)
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _step()
        limits = self.limits
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | bytes | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > limits.max_value_size
                ):
                    _too_big("a repetition")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > limits.max_int_bits
            ):
                _too_big("a product")
        elif operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and abs(left) > 1
                and right * left.bit_length() > limits.max_int_bits
            ):
                _too_big("a power")
        elif operator == "%":
            _check_printf(left, limits)
        return _check_size(self.binop_table[operator](left, right), limits)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _step()
        limits = self.limits
        owner = getattr(obj, "__self__", None)
        if isinstance(obj, types.BuiltinMethodType) and isinstance(owner, str | bytes):
            method = obj.__name__
            if method in _PADDING_METHODS:
                for value in (*args, *kwargs.values()):
                    _check_width(value, limits)
            elif method == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1], limits)
            elif method == "join" and args:
                args = (_materialized_join(owner, args[0], limits), *args[1:])
        return _check_size(super().call(context, obj, *args, **kwargs), limits)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's sandboxed ``str.format``, with format specs checked as well
        (``'{:>999999999}'.format(x)``)."""
        is_str_method = isinstance(value, types.MethodType | types.BuiltinMethodType)
        if not is_str_method or value.__name__ not in ("format", "format_map"):
            return None
        template = value.__self__
        if not isinstance(template, str):
            return None
        formatter: _FormatSpecGuard = (
            _EscapingFormatSpecGuard(self, escape=template.escape)
            if isinstance(template, Markup)
            else _FormatSpecGuard(self)
        )
        formatter.limits = self.limits
        is_format_map = value.__name__ == "format_map"
        str_type = type(template)

        def guarded(*args: Any, **kwargs: Any) -> str:
            if not is_format_map:
                return str_type(formatter.vformat(template, args, kwargs))
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one positional argument")
            return str_type(formatter.vformat(template, (), args[0]))

        return functools.update_wrapper(guarded, value)


# ---------------------------------------------------------------------------------------------
# Public API


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, SecurityError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def _one_line(value: str) -> str:
    """Subjects and titles are header-like: no line breaks (no header injection)."""
    return re.sub(r"\s*[\r\n]+\s*", " ", value).strip()


class SandboxRenderer:
    """Checks template syntax and renders template fields; compiled templates are cached."""

    def __init__(self, limits: RenderLimits | None = None) -> None:
        self.limits = limits or RenderLimits()
        self._text_env = _SandboxedEnvironment(autoescape=False, limits=self.limits)
        self._html_env = _SandboxedEnvironment(autoescape=True, limits=self.limits)
        self._compile_text = functools.lru_cache(maxsize=1024)(self._text_env.from_string)
        self._compile_html = functools.lru_cache(maxsize=1024)(self._html_env.from_string)

    def _compile(self, field: str, source: str, escaped: bool) -> Template:
        try:
            return self._compile_html(source) if escaped else self._compile_text(source)
        except TemplateSyntaxError as exc:
            raise TemplateSyntaxProblem(
                field, exc.lineno, exc.message or "invalid syntax"
            ) from None
        except RecursionError:
            raise TemplateSyntaxProblem(field, None, "the template is nested too deeply") from None
        except Exception as exc:  # anything else the compiler chokes on is still the input's fault
            raise TemplateSyntaxProblem(field, None, _describe(exc)) from None

    def check_syntax(self, content: Content) -> None:
        """Raise :class:`TemplateSyntaxProblem` naming the first field that does not compile."""
        for field, source, escaped in content.sources():
            self._compile(field, source, escaped)

    def _render_field(self, field: str, template: Template, variables: Mapping[str, Any]) -> str:
        parts: list[str] = []
        size = 0
        try:
            for chunk in template.generate(variables):
                size += len(chunk)
                if size > self.limits.max_output_chars:
                    _too_big("the output")
                parts.append(chunk)
        except _UndefinedVariable as exc:
            raise MissingVariable(exc.variable, field) from None
        except Exception as exc:  # a template error of any kind is the template's fault: 422
            raise TemplateRenderFailed(field, _describe(exc)) from None
        return "".join(parts)

    def render_sync(self, content: Content, variables: Mapping[str, Any]) -> RenderedContent:
        """Render every field of ``content`` (blocking; see :meth:`render`)."""
        compiled = [(f, self._compile(f, s, e)) for f, s, e in content.sources()]
        token = _budget.set(_Budget(self.limits))
        try:
            out = {field: self._render_field(field, tpl, variables) for field, tpl in compiled}
        finally:
            _budget.reset(token)
        if content.type is Channel.EMAIL:
            html = out["html"]
            return RenderedContent(
                subject=_one_line(out.get("subject", "")),
                html=html,
                text=out["text"] if "text" in out else html_to_text(html),
            )
        title = out.get("title")
        return RenderedContent(
            title=_one_line(title) if title is not None else None,
            body=out["body"],
            image=out.get("image", "").strip() or None,
            link=out.get("link", "").strip() or None,
        )

    async def render(self, content: Content, variables: Mapping[str, Any]) -> RenderedContent:
        """Render in a worker thread so that a slow template does not stall the event loop."""
        return await asyncio.to_thread(self.render_sync, content, variables)
