"""The sandboxed template engine: fallbacks, errors naming the variable, and refusals of
everything that reaches outside the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from services.campaigns.templating import CompiledContent, TemplateProblem, check, contact_context


async def render(
    subject: str, context: dict[str, Any], html: str | None = None
) -> tuple[str, str | None]:
    content = await CompiledContent(subject, html, None).render(context)
    return content.subject, content.html


async def test_default_filter_is_the_fallback_for_missing_and_empty_fields() -> None:
    subject, _ = await render('Hi {{ first_name | default("there") }}', {})
    assert subject == "Hi there"
    ctx = contact_context({"email": "a@x.io", "first_name": "", "tags": [], "custom_fields": {}})
    assert (await render('Hi {{ first_name | default("there") }}', ctx))[0] == "Hi there"
    ctx = contact_context({"email": "a@x.io", "first_name": "Ada", "tags": [], "custom_fields": {}})
    assert (await render('Hi {{ first_name | default("there") }}', ctx))[0] == "Hi Ada"


async def test_custom_fields_are_variables_but_contact_fields_win() -> None:
    ctx = contact_context(
        {
            "email": "a@x.io",
            "company": "Acme",
            "tags": ["vip"],
            "custom_fields": {"plan": "pro", "company": "Other", "bad key": 1},
        }
    )
    assert (await render("{{ plan }} {{ company }} {{ tags[0] }}", ctx))[0] == "pro Acme vip"
    assert "bad key" not in ctx


async def test_missing_variable_error_names_it() -> None:
    with pytest.raises(TemplateProblem) as info:
        await render("Hello {{ last_name }}", {"first_name": "Ada"})
    assert info.value.kind == "render"
    assert info.value.variable == "last_name"
    assert "last_name" in info.value.message


async def test_html_is_escaped_and_subject_stays_one_line() -> None:
    subject, html = await render("Hi {{ n }}", {"n": "A\r\nBcc: evil@x.io"}, "<p>{{ n }}</p>")
    assert "\n" not in subject and "\r" not in subject
    assert html == "<p>A\r\nBcc: evil@x.io</p>"
    _, html = await render("x", {"n": "<script>alert(1)</script>"}, "{{ n }}")
    assert html == "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ x['__class__'] }}",
        "{{ self.__dict__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{% include '/etc/passwd' %}",
        "{% import 'x.html' as x %}",
        "{% extends 'base.html' %}",
        "{% from 'x' import y %}",
    ],
)
def test_sandbox_escapes_are_refused_at_compile_time(source: str) -> None:
    with pytest.raises(TemplateProblem) as info:
        check("html", source)
    assert info.value.kind == "unsafe"


@pytest.mark.parametrize(
    "source",
    [
        "{{ x | attr('__class__') }}",
        "{{ x | attr('_' ~ '_class__') }}",
        "{{ (x | attr('mro')) }}",
    ],
)
async def test_sandbox_escapes_are_refused_at_render_time(source: str) -> None:
    content = CompiledContent("s", source, None)
    with pytest.raises(TemplateProblem) as info:
        await content.render({"x": "abc"})
    assert info.value.kind in ("unsafe", "render")
    assert "abc" not in (info.value.message or "")


async def test_globals_that_reach_python_are_gone() -> None:
    for name in ("cycler", "joiner", "namespace", "lipsum", "dict"):
        with pytest.raises(TemplateProblem):
            await render("{{ " + name + " }}", {})


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateProblem) as info:
        check("html", "<p>\n{{ first_name </p>")
    assert info.value.kind == "syntax"
    assert "line 2" in info.value.message


async def test_oversized_output_is_refused() -> None:
    content = CompiledContent("s", None, "{% for i in range(10000) %}" + "x" * 180 + "{% endfor %}")
    with pytest.raises(TemplateProblem) as info:
        await content.render({})
    assert "exceeds" in info.value.message
