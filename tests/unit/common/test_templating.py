"""The bounded renderer: nothing a customer template does runs at compile time, every
growth of a value is checked before it happens, loops draw on a budget, output is counted
while it streams, and the worker pool's hard limits fail one message, never the caller."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

import pytest

from libs.common.templating import (
    RenderJob,
    TemplateLimits,
    TemplatePool,
    TemplateProblem,
    check_source,
    environment,
    render_in_process,
)


def render(source: str, context: dict[str, Any] | None = None, *, strict: bool = True) -> str:
    out = render_in_process(RenderJob({"text": source}, context or {}, strict))
    assert out["text"] is not None
    return out["text"]


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 100000000 }}",
        "{{ 'x' | center(100000000) }}",
        "{{ ('x' ~ 'y') * 50000000 }}",
        "{{ 7 ** 9999999 }}",
    ],
)
def test_compiling_never_evaluates_the_template(source: str) -> None:
    # Jinja folds constant expressions while compiling: this would allocate 100 MB (or
    # compute a 28-million-bit number) before any limit could look at it.
    tracemalloc.start()
    try:
        environment(False, True).from_string(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000
    with pytest.raises(TemplateProblem) as info:
        render(source)
    assert info.value.kind == "limit"


@pytest.mark.parametrize(
    ("source", "context", "says"),
    [
        ("{{ s * n }}", {"s": "ab", "n": 10**8}, "characters"),
        ("{{ n ** n ** n }}", {"n": 99}, "bits"),
        ("{{ a * a }}", {"a": 2**5000}, "bits"),
        ("{{ s + s }}", {"s": "x" * 600_000}, "characters"),
        ("{{ s ~ s }}", {"s": "x" * 600_000}, "characters"),
        ("{{ s | center(n) }}", {"s": "x", "n": 10**9}, "characters"),
        ("{{ s.ljust(n) }}", {"s": "x", "n": 10**9}, "characters"),
        ("{{ s.replace('x', s) }}", {"s": "x" * 100_000}, "characters"),
        ("{{ s | replace('x', s) }}", {"s": "x" * 100_000}, "characters"),
        ("{{ l | join(s) }}", {"s": "x" * 100_000, "l": list(range(100))}, "characters"),
        ("{{ s | indent(n) }}", {"s": "a\n" * 1000, "n": 10**6}, "characters"),
        ("{{ '{:>999999999}'.format(1) }}", {}, "wider"),
        ("{{ '{:>{}}'.format(1, n) }}", {"n": 10**9}, "arguments"),
        ("{{ '%999999999d' % 1 }}", {}, "wider"),
        ("{{ '%*d' | format(n, 1) }}", {"n": 10**9}, "arguments"),
        ("{{ [1] | batch(n, 'x') | list }}", {"n": 10**9}, "limited"),
        ("{{ l | slice(n) | list }}", {"n": 10**9, "l": [1]}, "limited"),
        ("{{ range(n) | list }}", {"n": 10**9}, "range"),
        (
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            {},
            "loops",
        ),
        (
            "{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}",
            {"l": list(range(1000))},
            "loops",
        ),
        ("{% for i in l recursive %}{{ loop(l) }}{% endfor %}", {"l": [1, 2]}, ""),
        ("{% for i in range(9000) %}{{ 'x' * 200 }}{% endfor %}", {}, "output"),
    ],
)
def test_each_way_to_grow_is_checked_before_it_grows(
    source: str, context: dict[str, Any], says: str
) -> None:
    with pytest.raises(TemplateProblem) as info:
        render(source, context)
    assert info.value.kind == "limit"
    assert says in info.value.message


def test_namespace_doubling_is_bounded() -> None:
    source = (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"
    )
    with pytest.raises(TemplateProblem) as info:
        render(source, strict=False)
    assert info.value.kind == "limit"


def test_ordinary_templates_render_as_before() -> None:
    source = (
        "{% for x in l %}{{ loop.index }}/{{ loop.length }}:{{ x | upper }} {% endfor %}"
        "{{ l | join(',') }} {{ '%s-%03d' | format('a', 7) }} {{ 'abc' | replace('b', 'X') }}"
        " {{ 2 ** 10 }} {{ 'ab' * 2 }} {{ n ~ '!' }} {{ (l | map('upper') | list)[0] }}"
        " {{ 'Hi {}'.format(n) }} {{ 'x' | center(5) }}|"
    )
    out = render(source, {"l": ["a", "b"], "n": 3})
    assert out == "1/2:A 2/2:B a,b a-007 aXc 1024 abab 3! A Hi 3   x  |"
    assert render("{{ missing }}|", strict=False) == "|"


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("{{ 'x' * 10**9 }}", "limit"),
        ("{{ 9 ** 99999999 }}", "limit"),
        ("{% for i in range(10**7) %}x{% endfor %}", "limit"),
        ("{{ 'a' ~ 'b' * 2000000 }}", "limit"),
        ("{{ x.__class__ }}", "unsafe"),
        ("{{ x ", "syntax"),
    ],
)
def test_save_time_refuses_what_it_can(source: str, kind: str) -> None:
    with pytest.raises(TemplateProblem) as info:
        check_source("text", source)
    assert info.value.kind == kind


def test_save_time_accepts_what_depends_on_data() -> None:
    for source in ("{{ 'x' * n }}", "{% for i in range(n) %}{% endfor %}", "{{ 2 ** 64 }}"):
        check_source("text", source)


SMALL = TemplateLimits(timeout_seconds=1.0, cpu_seconds=2, memory_bytes=256 * 1024 * 1024)
GOOD = RenderJob({"subject": "Hi {{ n }}", "text": "ok {{ n }}"}, {"n": 1})
# Escapes every soft check (macro output is not streamed): only RLIMIT_AS stops it.
MEMORY_HOG = RenderJob(
    {
        "subject": "s",
        "text": "{% macro m() %}{% for i in range(1000) %}{{ s }}{% endfor %}"
        "{% endmacro %}{{ m() | length }}",
    },
    {"s": "x" * 1_000_000},
)
# One long C call (sorting a million items, fifty times over) never reaches a budget
# check: only the wall-clock timeout stops it.
CPU_HOG = RenderJob(
    {"subject": "s", "text": "{{ l | sort | list | length }}" * 200}, {"l": list(range(10**6))}
)


async def test_hard_limits_fail_one_message_and_the_pool_carries_on() -> None:
    pool = TemplatePool(size=1, limits=SMALL)
    try:
        results = await pool.render([GOOD, MEMORY_HOG, CPU_HOG, GOOD])
        assert results[0] == {"subject": "Hi 1", "html": None, "text": "ok 1"}
        assert isinstance(results[1], TemplateProblem) and results[1].kind == "limit"
        assert "memory" in results[1].message
        assert isinstance(results[2], TemplateProblem) and results[2].kind == "limit"
        assert "too long" in results[2].message
        assert results[3] == results[0]
        # The memory hog's worker recycled; the CPU hog's killed twice: once inside its frame
        # (answers may be held back, so the unanswered are re-run one per frame), then alone.
        assert pool.restarts == 3
        assert await pool.render_one(GOOD) == results[0]
    finally:
        await pool.close()


async def test_a_slow_render_never_blocks_the_event_loop() -> None:
    pool = TemplatePool(size=1, limits=SMALL)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        await pool.render_one(GOOD)  # worker started
        ticks = 0
        (result,) = await pool.render([CPU_HOG])
        assert isinstance(result, TemplateProblem)
        assert ticks > 1  # the loop kept running while the worker spun
    finally:
        ticker.cancel()
        await pool.close()


async def test_jobs_past_the_deadline_come_back_unrendered() -> None:
    pool = TemplatePool(size=1, limits=SMALL)
    try:
        await pool.render_one(GOOD)  # worker started
        results = await pool.render([CPU_HOG, GOOD, GOOD], deadline=time.monotonic() + 0.1)
        # Nothing answered by the deadline: all three come back to be retried later (the
        # busy worker is replaced, so the caller is not held for the CPU hog's timeout).
        assert results == [None, None, None]
        assert await pool.render_one(GOOD) == {"subject": "Hi 1", "html": None, "text": "ok 1"}
    finally:
        await pool.close()
