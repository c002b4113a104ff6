"""The sandboxed template engine of campaigns and templates: compile checks and rendering.

Templates are written by customers, so they run in Jinja2's immutable sandbox: no access to
underscore attributes (`__class__`, `__globals__`, ...), no mutation of passed objects, no
loader (so `include`/`import`/`extends` cannot reach files), no network. Variables missing
from the context raise an error that names them; `{{ first_name | default("there") }}`
supplies a fallback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Rendered output is capped: a template looping to build megabytes is refused, not sent.
MAX_OUTPUT_CHARS = 1_000_000
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")


class TemplateProblem(Exception):
    """A template cannot be compiled or rendered; `kind` is syntax, unsafe or render."""

    def __init__(self, kind: str, part: str, message: str, variable: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.part = part
        self.message = message
        self.variable = variable


class _Environment(ImmutableSandboxedEnvironment):
    # Refuse every underscore name, not only the ones Jinja deems dangerous: no template
    # needs them and they are the way into Python internals.
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr.startswith("_"):
            return False
        return super().is_safe_attribute(obj, attr, value)


def _make_env(autoescape: bool) -> _Environment:
    env = _Environment(
        undefined=StrictUndefined,
        autoescape=autoescape,
        loader=None,
        keep_trailing_newline=True,
    )
    # Only pure helpers stay reachable as globals.
    env.globals = {"range": env.globals["range"]}
    return env


_HTML_ENV = _make_env(autoescape=True)
_TEXT_ENV = _make_env(autoescape=False)


def _env_for(part: str) -> _Environment:
    return _HTML_ENV if part == "html" else _TEXT_ENV


def _unsafe_nodes(tree: nodes.Template) -> str | None:
    """The first construct no customer template may use, or None."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Name):
            name = node.name
        elif isinstance(node.arg, nodes.Const):
            name = node.arg.value
        if isinstance(name, str) and name.startswith("_"):
            return f"access to '{name}' is not allowed"
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        return f"'{type(node).__name__.lower()}' is not allowed: templates cannot load files"
    return None


def check(part: str, source: str) -> None:
    """Compile `source` (the `part` subject/html/text of a template); raise `TemplateProblem`
    on a syntax error or a construct that reaches outside the sandbox."""
    env = _env_for(part)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem("syntax", part, f"{part}: line {exc.lineno}: {exc.message}") from exc
    problem = _unsafe_nodes(tree)
    if problem:
        raise TemplateProblem("unsafe", part, f"{part}: {problem}")


@dataclass(frozen=True)
class Content:
    subject: str
    html: str | None
    text: str | None


class CompiledContent:
    """Subject, html and text compiled once, rendered per recipient."""

    def __init__(self, subject: str, html: str | None, text: str | None) -> None:
        self._parts: dict[str, Any] = {}
        for part, source in (("subject", subject), ("html", html), ("text", text)):
            if source is None:
                continue
            check(part, source)
            self._parts[part] = _env_for(part).from_string(source)

    def render(self, context: Mapping[str, Any]) -> Content:
        out: dict[str, str | None] = {"html": None, "text": None}
        for part, template in self._parts.items():
            out[part] = _render(part, template, context)
        subject = out.get("subject") or ""
        # A subject is one header line: a newline from a variable must not inject headers.
        subject = " ".join(subject.split())
        return Content(subject=subject, html=out["html"], text=out["text"])


def _render(part: str, template: Any, context: Mapping[str, Any]) -> str:
    try:
        rendered: str = template.render(context)
    except SecurityError as exc:
        raise TemplateProblem("unsafe", part, f"{part}: {exc}") from exc
    except UndefinedError as exc:
        found = _UNDEFINED_NAME.search(str(exc))
        variable = found.group(1) if found else None
        message = (
            f"{part}: variable '{variable}' is not defined; give it a value or a fallback"
            f' such as {{{{ {variable} | default("...") }}}}'
            if variable
            else f"{part}: {exc}"
        )
        raise TemplateProblem("render", part, message, variable) from exc
    except TemplateError as exc:
        raise TemplateProblem("render", part, f"{part}: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, OverflowError) as exc:
        raise TemplateProblem("render", part, f"{part}: {type(exc).__name__}: {exc}") from exc
    if len(rendered) > MAX_OUTPUT_CHARS:
        raise TemplateProblem(
            "render", part, f"{part}: rendered output exceeds {MAX_OUTPUT_CHARS} characters"
        )
    return rendered


def contact_context(contact: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict:
    """The variables a template sees for one contact: its custom fields, then its own
    fields (which win), then `extra`. Empty values are left out so `default()` applies."""
    context: dict[str, Any] = {}
    custom = contact.get("custom_fields") or {}
    for key, value in custom.items():
        if isinstance(key, str) and key.isidentifier() and value not in (None, ""):
            context[key] = value
    for key in ("email", "first_name", "last_name", "company"):
        value = contact.get(key)
        if value not in (None, ""):
            context[key] = value
    context["tags"] = list(contact.get("tags") or [])
    context["custom_fields"] = dict(custom)
    if extra:
        context.update(extra)
    return context
