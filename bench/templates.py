"""Cost of bounded template rendering (issue 13) against rendering in-process.

Renders N campaign-like messages (subject + ~2 KB html + text with a condition, a loop over
tags and filters), each with its own contact variables, four ways:

1. plain: Jinja's immutable sandbox in-process, unbounded (what rendering was before);
2. bounded in-process: `render_in_process` (checked operators, budget, streamed output cap);
3. pool, batched: one `TemplatePool.render(jobs)` call (how the runner and the delivery
   worker render a claimed batch), workers warm, compiled templates cached in them;
4. pool, one call per message: the preview path (a pipe round trip per render).

Each figure is the best of ROUNDS interleaved rounds (a shared machine is noisy); prints µs
per message and ratios against (1) and (2) measured in the same run.
Run: `uv run python -m bench.templates` (or `make bench`). BENCH_TEMPLATES_N (default 4000).
"""

from __future__ import annotations

import asyncio
import os
import time

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from libs.common.templating import RenderJob, TemplatePool, render_in_process

N = int(os.environ.get("BENCH_TEMPLATES_N", "4000"))
ROUNDS = int(os.environ.get("BENCH_TEMPLATES_ROUNDS", "3"))
SUBJECT = "Quick question, {{ first_name | default('there') }}"
HTML = (
    "<html><body><p>Hi {{ first_name | default('there') }},</p>"
    "{% if company %}<p>How is everyone at {{ company | title }}?</p>{% endif %}"
    + "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.</p>"
    * 20
    + "<ul>{% for t in tags %}<li>{{ t | upper }}</li>{% endfor %}</ul>"
    "<p><a href='https://example.com/x?c={{ email | urlencode }}'>Book a call</a></p>"
    "</body></html>"
)
TEXT = "Hi {{ first_name | default('there') }}, {{ tags | join(', ') }}"


def contexts(n: int) -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "email": f"user{i}@example.com",
            "first_name": f"Name{i}",
            "company": f"company {i % 50}" if i % 3 else "",
            "tags": ["vip", f"t{i % 7}"],
        }
        for i in range(n)
    ]


def plain(ctxs: list[dict]) -> float:  # type: ignore[type-arg]
    text = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    html = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
    t = (text.from_string(SUBJECT), html.from_string(HTML), text.from_string(TEXT))
    started = time.perf_counter()
    for c in ctxs:
        t[0].render(c), t[1].render(c), t[2].render(c)
    return time.perf_counter() - started


def bounded(jobs: list[RenderJob]) -> float:
    render_in_process(jobs[0])  # compile once, as the workers do
    started = time.perf_counter()
    for j in jobs:
        render_in_process(j)
    return time.perf_counter() - started


async def pooled(jobs: list[RenderJob]) -> tuple[float, float, float]:
    pool = TemplatePool(size=2)
    try:
        started = time.perf_counter()
        await pool.render(jobs[:200])  # workers started and templates compiled
        warmup = time.perf_counter() - started
        batched = float("inf")
        for _ in range(ROUNDS):
            started = time.perf_counter()
            results = await pool.render(jobs)
            batched = min(batched, time.perf_counter() - started)
            assert all(isinstance(r, dict) for r in results)
        singles = jobs[: max(200, len(jobs) // 10)]
        started = time.perf_counter()
        for j in singles:
            await pool.render([j])
        single = (time.perf_counter() - started) / len(singles) * len(jobs)
        return warmup, batched, single
    finally:
        await pool.close()


def main() -> None:
    ctxs = contexts(N)
    jobs = [RenderJob({"subject": SUBJECT, "html": HTML, "text": TEXT}, c) for c in ctxs]
    base = inproc = float("inf")
    for _ in range(ROUNDS):
        base = min(base, plain(ctxs))
        inproc = min(inproc, bounded(jobs))
    warmup, batched, single = asyncio.run(pooled(jobs))
    per = lambda s: s / N * 1e6  # noqa: E731 - µs per message
    print(f"templates: {N} messages (subject + {len(HTML)}-char html + text)")
    print(f"  plain sandbox, in-process:   {per(base):8.1f} µs/msg")
    print(f"  bounded, in-process:         {per(inproc):8.1f} µs/msg  ({inproc / base:.2f}x plain)")
    print(
        f"  bounded pool, batched:       {per(batched):8.1f} µs/msg  "
        f"({batched / base:.2f}x plain, {batched / inproc:.2f}x bounded in-process)"
    )
    print(
        f"  bounded pool, 1 msg per call:{per(single):8.1f} µs/msg  "
        f"({single / base:.2f}x plain, {single / inproc:.2f}x bounded in-process)"
    )
    print(f"  pool start (2 workers) + first 200 messages: {warmup * 1000:.0f} ms")


if __name__ == "__main__":
    main()
