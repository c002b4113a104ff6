"""Turns a stored message into what a provider receives: personalization (Jinja, sandboxed,
HTML auto-escaped, bounded: `libs.common.templating`), open pixel, click-tracking links,
Message-ID and RFC 8058 one-click unsubscribe headers.

Content that only substitutes variables (`{{ first_name }}`, no filters or logic) becomes a
slot template shared by every recipient of a send plus per-recipient values, so batch APIs
(Mailgun recipient-variables, SendGrid personalizations) carry the body once; anything
richer is rendered per message, in the bounded render pool (`Renderer.job` gives the job,
`Renderer.render` takes its result).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import nodes
from markupsafe import escape

from libs.common.reply_tokens import reply_address
from libs.common.templating import (
    Rendered,
    RenderJob,
    TemplateProblem,
    check_source,
    environment,
    is_plain_substitution,
)
from services.delivery.connectors.base import BatchTemplate, OutgoingEmail, fill_slots, slot
from services.delivery.connectors.replies import message_id_header, sender_domain
from services.delivery.tracking import TokenSigner, TrackingToken

_HREF = re.compile(r"""(href\s*=\s*)(["'])(https?://[^"'\s]+)\2""", re.IGNORECASE)
# Slot templates only substitute names (nothing runs): the bounded environments in-process.
_ENV = environment(False, False)
_HTML_ENV = environment(True, False)
_PIXEL = '<img src="{url}" width="1" height="1" alt="" style="display:none">'


class ContentError(ValueError):
    """The content cannot be rendered (template syntax or runtime error)."""


class ContentLimitExceeded(ContentError):
    """The content exceeds a template limit (`template_limit_exceeded`)."""


def check_template(source: str | None, part: str = "text") -> None:
    """Raise ContentError when `source` is not a valid template, or one that exceeds a limit
    whatever the variables (checked at accept time; nothing of it runs)."""
    if source:
        try:
            check_source(part, source, strict=False)
        except TemplateProblem as problem:
            raise content_error(problem) from problem


def content_error(problem: TemplateProblem) -> ContentError:
    if problem.kind == "limit":
        return ContentLimitExceeded(f"template_limit_exceeded: {problem.message}")
    return ContentError(f"template error: {problem.message}")


def _is_simple(source: str) -> bool:
    return is_plain_substitution(source)


@dataclass(frozen=True)
class Content:
    id: str
    from_email: str
    subject: str
    html: str | None
    text: str | None
    reply_to: str | None = None
    # Already personalised by its producer (campaign runner): sent verbatim, never a template.
    literal: bool = False


@dataclass(frozen=True)
class SlotContent:
    """A content's shared template: slots for variables (`h_` ones HTML-escaped) and links."""

    subject: str
    html: str | None
    text: str | None
    links: tuple[str, ...]


def _verbatim(source: str | None) -> str | None:
    """Literal content as a slot template with no slots: the slot delimiters (ASCII record and
    unit separators, meaningless in mail) are dropped so no text can pose as a slot."""
    return None if source is None else source.translate(_SLOT_DELIMITERS)


_SLOT_DELIMITERS = str.maketrans("", "", "\x1e\x1f")


@lru_cache(maxsize=256)
def _slot_content(content: Content) -> SlotContent | None:
    sources = [s for s in (content.subject, content.html, content.text) if s]
    if not content.literal and not all(_is_simple(s) for s in sources):
        return None

    def render(source: str | None, html: bool) -> str | None:
        if source is None:
            return None
        if content.literal:
            return _verbatim(source)
        tree = _ENV.parse(source)
        names = {n.name for n in tree.find_all(nodes.Name)}
        env = _HTML_ENV if html else _ENV
        return env.from_string(source).render({n: slot(f"h_{n}" if html else n) for n in names})

    html = render(content.html, html=True)
    links: list[str] = []
    if html is not None:

        def to_slot(m: re.Match[str]) -> str:
            if "\x1e" in m.group(3):
                raise _PersonalizedLink
            links.append(m.group(3))
            return f"{m.group(1)}{m.group(2)}{slot(f'pm_link_{len(links) - 1}')}{m.group(2)}"

        try:
            html = _HREF.sub(to_slot, html)
        except _PersonalizedLink:
            return None
    subject = render(content.subject, html=False) or ""
    return SlotContent(subject, html, render(content.text, html=False), tuple(links))


class _PersonalizedLink(Exception):
    """A link whose URL depends on a variable cannot be signed ahead of rendering."""


@dataclass(frozen=True)
class MessageSpec:
    """What the renderer needs of a stored message."""

    id: str
    tenant_id: str
    to: str
    category: str
    variables: Mapping[str, Any]
    tags: tuple[str, ...]
    metadata: Mapping[str, str]
    track_opens: bool
    track_clicks: bool


class Renderer:
    def __init__(
        self,
        signer: TokenSigner,
        tracking_base_url: str,
        reply_token_key: str | None = None,
        reply_domain: str | None = None,
    ) -> None:
        self.signer = signer
        self.base = tracking_base_url.rstrip("/")
        # Set: a message without its own Reply-To gets `reply+<token>@<reply_domain>`, so a
        # reply threads in the inbox even when the client drops In-Reply-To/References.
        self.reply_token_key = reply_token_key
        self.reply_domain = reply_domain

    def reply_to(self, content: Content, message_id: str) -> str | None:
        if content.reply_to or not (self.reply_token_key and self.reply_domain):
            return content.reply_to
        return reply_address(self.reply_token_key, message_id, self.reply_domain)

    def _url(self, path: str, token: TrackingToken) -> str:
        return f"{self.base}{path}{self.signer.sign(token)}"

    def unsubscribe_url(self, message_id: str) -> str:
        return self._url("/unsubscribe/", TrackingToken("u", message_id))

    def _headers(self, content: Content, m: MessageSpec, unsub: str) -> dict[str, str]:
        headers = {
            "Message-ID": message_id_header(m.id, sender_domain(content.from_email)),
            "List-Unsubscribe": f"<{unsub}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        headers.update(_threading(m))
        return headers

    @staticmethod
    def job(content: Content, m: MessageSpec) -> RenderJob | None:
        """What the render pool must run for this message; None when slots suffice."""
        if _slot_content(content) is not None:
            return None
        parts = {"subject": content.subject, "html": content.html, "text": content.text}
        return RenderJob(parts, m.variables, strict=False)

    def render(
        self, content: Content, m: MessageSpec, rendered: Rendered | None = None
    ) -> OutgoingEmail:
        """The provider's message; `rendered` is the pool's result of `job()` (if any)."""
        unsub = self.unsubscribe_url(m.id)
        headers = self._headers(content, m, unsub)
        shared = _slot_content(content)
        if shared is not None:
            return self._from_slots(content, shared, m, headers, unsub)
        if rendered is None:
            raise ValueError("this content needs the render pool: pass the result of job()")
        subject = rendered.get("subject") or ""
        text = rendered.get("text") if content.text else None
        html = rendered.get("html") if content.html else None
        if html is not None:
            if m.track_clicks:
                html = _HREF.sub(
                    lambda x: (
                        f"{x.group(1)}{x.group(2)}"
                        f"{self._url('/t/c/', TrackingToken('c', m.id, x.group(3)))}{x.group(2)}"
                    ),
                    html,
                )
            if m.track_opens:
                html = _with_pixel(html, self._url("/t/o/", TrackingToken("o", m.id)))
        return self._email(
            content, m, _one_line(subject), html, text, headers, None, self.reply_to(content, m.id)
        )

    def _from_slots(
        self,
        content: Content,
        shared: SlotContent,
        m: MessageSpec,
        headers: dict[str, str],
        unsub: str,
    ) -> OutgoingEmail:
        values: dict[str, str] = {}
        for k, v in m.variables.items():
            values[k] = _one_line(str(v)) if v is not None else ""
            values[f"h_{k}"] = str(escape(str(v))) if v is not None else ""
        for i, link in enumerate(shared.links):
            values[f"pm_link_{i}"] = (
                self._url("/t/c/", TrackingToken("c", m.id, link)) if m.track_clicks else link
            )
        html_t = shared.html
        if html_t is not None and m.track_opens:
            values["pm_open_url"] = self._url("/t/o/", TrackingToken("o", m.id))
            html_t = _with_pixel(html_t, slot("pm_open_url"))
        values["pm_unsubscribe_url"] = unsub
        values["pm_message_id_header"] = headers["Message-ID"]
        template = BatchTemplate(
            key=(content.id, str(m.track_opens), str(m.track_clicks)),
            subject=shared.subject,
            html=html_t,
            text=shared.text,
            values=values,
            headers={
                "List-Unsubscribe": f"<{slot('pm_unsubscribe_url')}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                **_threading(m),
            },
        )
        reply_to = self.reply_to(content, m.id)
        if reply_to and reply_to != content.reply_to:
            # Per recipient: batch APIs substitute it like any other value.
            values["pm_reply_to"] = reply_to
            template = dataclasses.replace(
                template, headers={**template.headers, "Reply-To": slot("pm_reply_to")}
            )

        def get(name: str) -> str:
            return values.get(name, "")

        return self._email(
            content,
            m,
            _one_line(fill_slots(shared.subject, get)),
            fill_slots(html_t, get) if html_t is not None else None,
            fill_slots(shared.text, get) if shared.text is not None else None,
            headers,
            template,
            reply_to,
        )

    @staticmethod
    def _email(
        content: Content,
        m: MessageSpec,
        subject: str,
        html: str | None,
        text: str | None,
        headers: dict[str, str],
        template: BatchTemplate | None,
        reply_to: str | None,
    ) -> OutgoingEmail:
        return OutgoingEmail(
            message_id=m.id,
            tenant_id=m.tenant_id,
            to=m.to,
            from_=content.from_email,
            subject=subject,
            html=html,
            text=text,
            headers=headers,
            category=m.category,
            tags=m.tags,
            metadata=m.metadata,
            reply_to=reply_to,
            template=template,
        )


def _threading(m: MessageSpec) -> dict[str, str]:
    """In-Reply-To/References of a reply the inbox asked for (reserved `pm_` metadata, never
    sent to the provider as metadata)."""
    out = {}
    if m.metadata.get("pm_in_reply_to"):
        out["In-Reply-To"] = _one_line(m.metadata["pm_in_reply_to"])
    if m.metadata.get("pm_references"):
        out["References"] = _one_line(m.metadata["pm_references"])
    return out


def _with_pixel(html: str, url: str) -> str:
    pixel = _PIXEL.format(url=url)
    idx = html.lower().rfind("</body>")
    return html[:idx] + pixel + html[idx:] if idx >= 0 else html + pixel


def _one_line(value: str) -> str:
    # Header values never carry line breaks (header injection).
    return " ".join(value.splitlines())
