"""Property: whatever expression a template is built from, its render stays within the
budget: it returns output no larger than the cap, or fails with a `TemplateProblem`, and
its memory (and, in `make fuzz-templates`, its time) stays bounded. A short run is part of
`make test`; `make fuzz-templates` runs many more examples (PM_FUZZ_TEMPLATES=full)."""

from __future__ import annotations

import os
import time
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.common.templating import (
    RenderJob,
    TemplateLimits,
    TemplateProblem,
    compiled,
    render_in_process,
)

FULL = os.environ.get("PM_FUZZ_TEMPLATES") == "full"
LIMITS = TemplateLimits(
    max_output_chars=20_000,
    max_string_chars=20_000,
    max_int_bits=512,
    max_range=200,
    max_iterations=5_000,
    timeout_seconds=1.0,
)
# Everything a render may hold at once: a few values at the string cap, the output buffer,
# the compiled template. Far below what any unchecked growth reaches (it multiplies).
MEMORY_BUDGET = 40 * LIMITS.max_string_chars + 4_000_000
CONTEXT = {"s": "xy" * 50, "n": 97, "l": list(range(30)), "d": {"a": "b"}}

leaves = st.one_of(
    st.integers(min_value=-3, max_value=10**6).map(str),
    st.sampled_from(["10**6", "2**64", "9**9"]),
    st.text(alphabet="xy%{}:>*0123456789", max_size=12).map(repr),
    st.sampled_from(["s", "n", "l", "d", "l|length", "range(n)", "range(150)"]),
)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(inner, st.sampled_from(["**", "*", "+", "~", "//", "%", "-"]), inner)
    unary_filters = ["list", "sort", "string", "upper", "length", "first", "unique", "reverse"]
    arg_filters = ["center", "indent", "wordwrap", "batch", "slice", "join", "truncate"]
    return st.one_of(
        binary.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(unary_filters)).map(lambda t: f"({t[0]} | {t[1]})"),
        st.tuples(inner, st.sampled_from(arg_filters), inner).map(
            lambda t: f"({t[0]} | {t[1]}({t[2]}))"
        ),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} | replace({t[1]}, {t[2]}))"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]} | format({t[1]}))"),
        st.tuples(inner, st.sampled_from(["ljust", "rjust", "center", "zfill"]), inner).map(
            lambda t: f"({t[0]}|string).{t[1]}({t[2]})"
        ),
        st.tuples(inner, inner).map(lambda t: f"('{{}}{{}}'.format({t[0]}, {t[1]}))"),
    )


expressions = st.recursive(leaves, _extend, max_leaves=8)


def _statement(depth: int) -> st.SearchStrategy[str]:
    output = expressions.map(lambda e: "{{ " + e + " }}")
    if depth == 0:
        return output
    loop = st.tuples(expressions, _statement(depth - 1)).map(
        lambda t: "{% for i in " + t[0] + " %}" + t[1] + "{% endfor %}"
    )
    macro = _statement(depth - 1).map(
        lambda body: "{% macro m() %}" + body + "{% endmacro %}{{ m() | length }}"
    )
    return st.one_of(output, loop, macro)


templates = st.lists(_statement(3), min_size=1, max_size=3).map("".join)


@settings(
    max_examples=1500 if FULL else 25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not FULL,
)
@given(templates)
def test_no_render_exceeds_its_budget(source: str) -> None:
    job = RenderJob({"subject": "s", "text": source}, CONTEXT, strict=False)
    try:
        compiled(source, "text", False, LIMITS)  # compiling is not the render's budget
    except TemplateProblem:
        return
    tracemalloc.start()
    started = time.monotonic()
    try:
        out = render_in_process(job, LIMITS)
    except TemplateProblem as problem:
        assert problem.kind in ("limit", "render", "unsafe"), problem
    else:
        assert len(out["text"] or "") <= LIMITS.max_output_chars
    finally:
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= MEMORY_BUDGET, (source, peak)
    if FULL:
        # Only in the fuzz target: the cooperative deadline must end every render near its
        # time budget (the worker's hard kill is the backstop, not the plan). Generous: this
        # runs under tracemalloc on a shared machine, and includes compiling.
        assert elapsed <= LIMITS.timeout_seconds * 3 + 1, (source, elapsed)
