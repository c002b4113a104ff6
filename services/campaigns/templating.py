"""Campaign and template content: compile checks, rendering per contact, contact variables.

Templates are written by customers: they run in the bounded sandbox of
`libs.common.templating` (no underscore attributes, no loader, no compile-time evaluation,
size-checked operators, an iteration budget, output counted while streaming), rendered in
worker processes with hard time and memory limits. Variables missing from the context raise
an error that names them; `{{ first_name | default("there") }}` supplies a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.common.templating import (
    DEFAULT_LIMITS,
    Rendered,
    RenderJob,
    TemplatePool,
    TemplateProblem,
    check_source,
)

# Rendered output is capped per part: a template looping to build megabytes is refused.
MAX_OUTPUT_CHARS = DEFAULT_LIMITS.max_output_chars

# One pool per process (API previews, the runner), workers started on first use.
POOL = TemplatePool()


def check(part: str, source: str) -> None:
    """Compile-check `source` (the `part` subject/html/text of a template) without running
    it; raise `TemplateProblem` (syntax, unsafe or limit)."""
    check_source(part, source, strict=True)


@dataclass(frozen=True)
class Content:
    subject: str
    html: str | None
    text: str | None


class CompiledContent:
    """Subject, html and text checked once, rendered per recipient in the render pool."""

    def __init__(self, subject: str, html: str | None, text: str | None) -> None:
        self.parts: dict[str, str | None] = {"subject": subject, "html": html, "text": text}
        for part, source in self.parts.items():
            if source is not None:
                check(part, source)

    def job(self, context: Mapping[str, Any]) -> RenderJob:
        return RenderJob(self.parts, context, strict=True)

    async def render(self, context: Mapping[str, Any], pool: TemplatePool = POOL) -> Content:
        """One contact's content; raises `TemplateProblem`."""
        return content_of(await pool.render_one(self.job(context)))


def content_of(rendered: Rendered) -> Content:
    # A subject is one header line: a newline from a variable must not inject headers.
    subject = " ".join((rendered.get("subject") or "").split())
    return Content(subject=subject, html=rendered.get("html"), text=rendered.get("text"))


async def render_many(
    jobs: Sequence[RenderJob], deadline: float | None, pool: TemplatePool = POOL
) -> list[Content | TemplateProblem | None]:
    """Many contacts at once (one pool call); None for jobs not reached before `deadline`."""
    results = await pool.render(jobs, deadline=deadline)
    return [r if r is None or isinstance(r, TemplateProblem) else content_of(r) for r in results]


def contact_context(
    contact: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
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


__all__ = [
    "MAX_OUTPUT_CHARS",
    "POOL",
    "CompiledContent",
    "Content",
    "TemplateProblem",
    "check",
    "contact_context",
    "render_many",
]
