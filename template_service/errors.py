"""The errors template_service raises on purpose, each with a stable machine code."""

from __future__ import annotations

from libs.http.errors import BadRequest, Conflict, NotFound, Unprocessable


class TemplateNotFound(NotFound):
    code = "template_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class TemplateExists(Conflict):
    code = "template_exists"


class TypeMismatch(Unprocessable):
    """A code is email or push for all of its languages."""

    code = "type_mismatch"


class NoChanges(Unprocessable):
    code = "no_changes"


class TemplateSyntaxProblem(BadRequest):
    """A template field does not parse; ``data`` says which field and line."""

    code = "template_syntax_error"

    def __init__(self, field: str, line: int | None, detail: str) -> None:
        where = f" at line {line}" if line is not None else ""
        super().__init__(
            f"Template syntax error in {field}{where}: {detail}",
            data={"field": field, "line": line},
        )


class MissingVariable(Unprocessable):
    code = "missing_variable"

    def __init__(self, variable: str, field: str) -> None:
        super().__init__(
            f"Template variable '{variable}' is undefined", data={"variable": variable}
        )
        self.variable = variable
        self.field = field


class TemplateRenderFailed(Unprocessable):
    """Any other render-time error: a sandbox violation, a budget exceeded, a type error."""

    code = "template_error"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"Template error in {field}: {detail}", data={"field": field})
