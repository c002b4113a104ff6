"""Bounded rendering of customer templates, shared by campaigns and delivery.

Customer templates are Jinja2 in an immutable sandbox, and every render is bounded in time,
memory and output, in layers:

1. Compile never evaluates customer code: no optimizer, and the code generator folds only
   literals (Jinja would otherwise compute `{{ 9**9**9 }}` while compiling).
2. Every arithmetic operator, `~` concatenation, call and filter that can grow a value checks
   the size it would produce *before* computing it (`max_string_chars`, `max_int_bits`).
3. Loops and `range()` draw on an iteration budget per message (`max_iterations`,
   `max_range`); the budget also checks a cooperative deadline (`timeout_seconds`).
4. Output is counted while it streams out of `generate()`, not after (`max_output_chars`).
5. A hard limit nothing escapes: renders run in worker processes (`TemplatePool`) with
   `RLIMIT_AS`, a per-message `RLIMIT_CPU` and a wall-clock timeout; a worker that exceeds
   one is killed and replaced, and only the message it was rendering fails.

`check_source` refuses at save time what can be refused (syntax, reaching outside the
sandbox, constant expressions or ranges beyond the limits). A render that hits a limit
raises/returns `TemplateProblem(kind="limit")`; callers fail that one message or preview.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import os
import re
import resource
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from jinja2 import (
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    nodes,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace

# ----------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class TemplateLimits:
    """What one message's render may use (all parts of the message together)."""

    max_output_chars: int = 1_000_000  # per part (subject, html, text), counted while streaming
    max_string_chars: int = 1_000_000  # any string/list a single operation may produce
    max_int_bits: int = 4096  # integers from `*` / `**`
    max_range: int = 10_000  # elements of one range()
    max_iterations: int = 100_000  # loop iterations + range elements, per message
    timeout_seconds: float = 2.0  # wall clock per message (cooperative, then the worker dies)
    cpu_seconds: int = 3  # RLIMIT_CPU per message in a worker
    memory_bytes: int = 512 * 1024 * 1024  # RLIMIT_AS of a worker


DEFAULT_LIMITS = TemplateLimits()

# The API error of a template that exceeds a limit (each service registers it, same text).
LIMIT_ERROR_CODE = "template_limit_exceeded"
LIMIT_ERROR_MEANING = "The template exceeds a rendering limit (time, memory, loops or size)."


class TemplateProblem(Exception):
    """A template cannot be compiled or rendered.

    `kind`: syntax, unsafe, render or limit; `part`: subject, html or text; `variable` names a
    missing variable when that is the cause."""

    def __init__(self, kind: str, part: str, message: str, variable: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.part = part
        self.message = message
        self.variable = variable

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "part": self.part, "message": self.message, "var": self.variable}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TemplateProblem:
        return cls(d["kind"], d["part"], d["message"], d.get("var"))


class LimitExceeded(Exception):
    """Raised inside a render when it would exceed a limit (becomes kind `limit`)."""


# ----------------------------------------------------------------------------- budget


class _Budget:
    __slots__ = ("deadline", "left", "ticks")

    def __init__(self, iterations: int, seconds: float) -> None:
        self.left = iterations
        self.deadline = time.monotonic() + seconds
        self.ticks = 0

    def charge(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise LimitExceeded("the template loops too much (iteration budget exhausted)")
        # The clock every 16 operations: each is bounded in size, so 16 of them are short.
        self.ticks += 1
        if not self.ticks & 15 and time.monotonic() > self.deadline:
            raise LimitExceeded("the template takes too long to render")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "pm_template_budget", default=None
)


def _charge(n: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.charge(n)


# ----------------------------------------------------------------------------- environment

# A `%` or `{}` conversion's width/precision digits: the part of formatting that allocates.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")
_DIGITS = re.compile(r"\d+")
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{|%(?:\([^)]*\))?[-#0 +]*(?:\*|\d*\.\*)")


def _sized(value: Any) -> int:
    if isinstance(value, str):  # the common case first (Markup is a str)
        return len(value)
    if isinstance(value, bytes | list | tuple | dict | set | frozenset):
        return len(value)
    return 0


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, minus compile-time evaluation, plus budget hooks."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        # Only literal text and literal constants may be folded; anything else (`9**9**9`,
        # `"x"|center(10**9)`) is left to run, bounded, at render time.
        if not isinstance(node, nodes.TemplateData | nodes.Const):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        original = node.iter
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("bounded_iter"), [original], [], None, None
        ).set_lineno(original.lineno or node.lineno)
        try:
            super().visit_For(node, frame)
        finally:
            node.iter = original

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat(context, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox every customer template runs in."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, limits: TemplateLimits, *, html: bool, strict: bool) -> None:
        super().__init__(
            undefined=StrictUndefined if strict else Undefined,
            autoescape=html,
            loader=None,
            keep_trailing_newline=True,
            optimized=False,
            auto_reload=False,
            cache_size=0,
        )
        self.limits = limits
        self.globals = {"range": self.bounded_range}
        if not strict:
            # What delivery's templates have had (minus `lipsum`, unbounded work).
            self.globals.update(dict=dict, cycler=Cycler, joiner=Joiner, namespace=Namespace)
        self.filters = {name: self._bounded_filter(name, f) for name, f in FILTERS.items()}

    # ---- refusals that keep customers out of Python internals

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Every underscore name, not only the ones Jinja deems dangerous: no template needs
        # them and they are the way into Python internals.
        if attr.startswith("_"):
            return False
        return super().is_safe_attribute(obj, attr, value)

    # ---- size checks

    def _check_len(self, n: int, what: str = "value") -> None:
        if n > self.limits.max_string_chars:
            raise LimitExceeded(
                f"the template builds a {what} over {self.limits.max_string_chars} characters"
            )

    def _check_result(self, value: Any) -> Any:
        if _sized(value) > self.limits.max_string_chars:
            self._check_len(_sized(value))
        return value

    def _check_format(self, fmt: str) -> None:
        # Widths and precisions are the allocating part of `%` and `{}` formatting; a width
        # taken from an argument (`{:>{}}`, `%*s`) cannot be checked here, so it is refused.
        if _NESTED_SPEC.search(fmt):
            raise LimitExceeded("format widths taken from arguments are not allowed")
        specs = [m.group(1) or "" for m in _BRACE_SPEC.finditer(fmt)]
        specs += [
            (m.group(1) or "") + " " + (m.group(2) or "") for m in _PERCENT_SPEC.finditer(fmt)
        ]
        for spec in specs:
            for digits in _DIGITS.findall(spec):
                if len(digits) > 9 or int(digits) > self.limits.max_string_chars:
                    raise LimitExceeded("the template formats a value wider than allowed")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _charge(0)
        limits = self.limits
        if operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left) > 1
                and left.bit_length() * right > limits.max_int_bits
            ):
                raise LimitExceeded(
                    f"the template computes a number over {limits.max_int_bits} bits"
                )
            return left**right
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > limits.max_int_bits + 1:
                    raise LimitExceeded(
                        f"the template computes a number over {limits.max_int_bits} bits"
                    )
            elif isinstance(right, int) and _sized(left):
                self._check_len(_sized(left) * max(right, 0))
            elif isinstance(left, int) and _sized(right):
                self._check_len(_sized(right) * max(left, 0))
            return left * right
        if operator == "+":
            if _sized(left) and _sized(right):
                self._check_len(_sized(left) + _sized(right))
            return left + right
        if operator == "%" and isinstance(left, str):
            self._check_format(left)
            return self._check_result(left % right)
        if operator == "-":
            return left - right
        if operator == "/":
            return left / right
        if operator == "//":
            return left // right
        return left % right

    def bounded_concat(self, context: Any, values: tuple[Any, ...]) -> str:
        parts = [v if isinstance(v, str) else str(v) for v in values]
        self._check_len(sum(len(p) for p in parts))
        autoescape = context.eval_ctx.autoescape if context is not None else False
        joined: str = markup_join(values) if autoescape else str_join(values)
        return self._check_result(joined)  # type: ignore[no-any-return]

    def bounded_iter(self, iterable: Any) -> Iterator[Any]:
        for item in iterable:
            _charge(1)
            yield item

    def bounded_range(self, *args: int) -> range:
        r = range(*args)
        if len(r) > self.limits.max_range:
            raise LimitExceeded(f"range() is limited to {self.limits.max_range} elements")
        _charge(len(r))
        return r

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _charge(0)
        if isinstance(__obj, LoopContext) and args:
            # `loop(children)` of a recursive loop: the same budget as a `for`.
            args = (__self.bounded_iter(args[0]), *args[1:])
        else:
            __self._precheck_method(__obj, args, kwargs)
        return __self._check_result(super().call(__context, __obj, *args, **kwargs))

    def _precheck_method(self, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        owner = getattr(obj, "__self__", None)
        if not isinstance(owner, str):
            return
        name = getattr(obj, "__name__", "")
        if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
            self._check_len(args[0])
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(size, int):
                self._check_len(len(owner) + owner.count("\t") * max(size, 0))
        elif name == "replace" and len(args) >= 2:
            self._check_replace(owner, args[0], args[1])
        elif name == "join" and args:
            pass  # the joined size is checked on the result; inputs are already bounded

    def _check_replace(self, s: Any, old: Any, new: Any) -> None:
        if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
            count = s.count(old) if old else len(s) + 1
            self._check_len(len(s) + count * max(len(new) - len(old), 0))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        self._check_format(value.__self__)
        inner = wrapped

        def checked(*args: Any, **kwargs: Any) -> str:
            return self._check_result(inner(*args, **kwargs))  # type: ignore[no-any-return]

        return checked

    # ---- filters: pre-checks where output can outgrow the inputs, a size check on every result

    def _bounded_filter(self, name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        pre = self._filter_prechecks().get(name)

        def bounded(*args: Any, **kwargs: Any) -> Any:
            _charge(0)
            if pre is not None:
                skip = 0
                while skip < len(args) and _is_jinja_internal(args[skip]):
                    skip += 1
                pre(*args[skip:], **kwargs)
            return self._check_result(f(*args, **kwargs))

        # Keep Jinja's pass_context / pass_eval_context / pass_environment markers.
        for attr in ("jinja_pass_arg",):
            if hasattr(f, attr):
                setattr(bounded, attr, getattr(f, attr))
        bounded.__name__ = getattr(f, "__name__", name)
        return bounded

    def _filter_prechecks(self) -> dict[str, Callable[..., None]]:
        # Positions are those of Jinja 3.1's filters once pass_* arguments are dropped.
        def center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
            if isinstance(width, int):
                self._check_len(width)

        def indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
            s = str(value)
            per_line = width if isinstance(width, int) else len(str(width))
            self._check_len(len(s) + (s.count("\n") + 1) * max(per_line, 0))

        def wordwrap(
            value: Any, width: Any = 79, _b: Any = True, wrapstring: Any = None, *_: Any, **__: Any
        ) -> None:
            if isinstance(width, int) and width < 1:
                raise LimitExceeded("wordwrap needs a positive width")
            if isinstance(wrapstring, str):
                s = str(value)
                lines = len(s) // (width if isinstance(width, int) else 1) + s.count("\n") + 1
                self._check_len(len(s) + lines * len(wrapstring))

        def fmt(value: Any, *_: Any, **__: Any) -> None:
            if isinstance(value, str):
                self._check_format(value)

        def replace(value: Any, old: Any = "", new: Any = "", *_: Any, **__: Any) -> None:
            self._check_replace(str(value), old, new)

        def join(value: Any, d: Any = "", *_: Any, **__: Any) -> None:
            if isinstance(d, str) and _sized(value):
                self._check_len(len(d) * _sized(value))

        def counted(key: str) -> Callable[..., None]:
            def check(value: Any, n: Any = 0, *_: Any, **__: Any) -> None:
                if isinstance(n, int) and n > self.limits.max_range:
                    raise LimitExceeded(f"{key} is limited to {self.limits.max_range}")

            return check

        return {
            "center": center,
            "indent": indent,
            "wordwrap": wordwrap,
            "format": fmt,
            "replace": replace,
            "join": join,
            "batch": counted("linecount"),
            "slice": counted("slices"),
        }


def _is_jinja_internal(value: Any) -> bool:
    # pass_context / pass_eval_context / pass_environment filters get these first.
    return isinstance(value, Context | EvalContext | Environment)


# ----------------------------------------------------------------------------- compile checks


@lru_cache(maxsize=8)
def environment(
    html: bool, strict: bool, limits: TemplateLimits = DEFAULT_LIMITS
) -> BoundedEnvironment:
    return BoundedEnvironment(limits, html=html, strict=strict)


def _unsafe_nodes(tree: nodes.Template) -> str | None:
    """The first construct no customer template may use, or None."""
    node: Any
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


_UNKNOWN = object()
_UNARY: dict[type, Callable[[Any], Any]] = {nodes.Neg: lambda v: -v, nodes.Pos: lambda v: +v}


def _static_value(env: BoundedEnvironment, node: nodes.Node) -> Any:
    """The value of a constant expression, computed under the same size checks as a render
    (so `9**9**9` raises `LimitExceeded` without being computed); `_UNKNOWN` otherwise."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [_static_value(env, n) for n in node.items]
        return _UNKNOWN if any(i is _UNKNOWN for i in items) else items
    if isinstance(node, nodes.BinExpr) and node.operator in env.intercepted_binops:
        left, right = _static_value(env, node.left), _static_value(env, node.right)
        if left is _UNKNOWN or right is _UNKNOWN:
            return _UNKNOWN
        try:
            return env.call_binop(None, node.operator, left, right)
        except LimitExceeded:
            raise
        except Exception:
            return _UNKNOWN
    if isinstance(node, nodes.UnaryExpr) and type(node) in _UNARY:
        value = _static_value(env, node.node)
        if value is _UNKNOWN:
            return _UNKNOWN
        try:
            return _UNARY[type(node)](value)
        except Exception:
            return _UNKNOWN
    if isinstance(node, nodes.Concat):
        parts = [_static_value(env, n) for n in node.nodes]
        if any(p is _UNKNOWN for p in parts):
            return _UNKNOWN
        return env.bounded_concat(None, tuple(parts))
    return _UNKNOWN


def _static_limits(env: BoundedEnvironment, tree: nodes.Template) -> str | None:
    """Refuse constructs that exceed a limit whatever the data: constant expressions that
    are too large and constant `range()` calls beyond the limit."""
    try:
        for node in tree.find_all((nodes.BinExpr, nodes.Concat)):
            _static_value(env, node)
        for call in tree.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == "range":
                args = [_static_value(env, a) for a in call.args]
                if all(isinstance(a, int) for a in args) and 1 <= len(args) <= 3:
                    with contextlib.suppress(ValueError, TypeError):
                        env.bounded_range(*args)
    except LimitExceeded as exc:
        return str(exc)
    return None


def check_source(part: str, source: str, *, strict: bool = True) -> None:
    """Compile-check `source` (the `part` subject/html/text of a template) without running
    any of it; raise `TemplateProblem` (syntax, unsafe or limit)."""
    env = environment(part == "html", strict)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem("syntax", part, f"{part}: line {exc.lineno}: {exc.message}") from exc
    except RecursionError as exc:
        raise TemplateProblem("limit", part, f"{part}: the template is nested too deeply") from exc
    problem = _unsafe_nodes(tree)
    if problem:
        raise TemplateProblem("unsafe", part, f"{part}: {problem}")
    problem = _static_limits(env, tree)
    if problem:
        raise TemplateProblem("limit", part, f"{part}: {problem}")


def is_plain_substitution(source: str) -> bool:
    """True when `source` only substitutes variables (`{{ name }}`): nothing to run."""
    simple = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name)
    tree = environment(False, False).parse(source)
    return all(isinstance(n, simple) for n in tree.find_all(nodes.Node))


# ----------------------------------------------------------------------------- rendering

_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
PARTS = ("subject", "html", "text")


@dataclass(frozen=True)
class RenderJob:
    """One message: its parts' sources and the variables they see. `strict`: a missing
    variable is an error (campaigns) rather than empty (the send API)."""

    parts: Mapping[str, str | None]
    context: Mapping[str, Any]
    strict: bool = True


Rendered = dict[str, str | None]


@lru_cache(maxsize=512)
def _compiled(source: str, html: bool, strict: bool, limits: TemplateLimits) -> Template:
    return environment(html, strict, limits).from_string(source)


def compiled(source: str, part: str, strict: bool, limits: TemplateLimits) -> Template:
    """The compiled template of one part (cached); raises `TemplateProblem` (syntax)."""
    try:
        return _compiled(source, part == "html", strict, limits)
    except TemplateSyntaxError as exc:
        raise TemplateProblem("syntax", part, f"{part}: line {exc.lineno}: {exc.message}") from exc
    except RecursionError as exc:
        raise TemplateProblem("limit", part, f"{part}: the template is nested too deeply") from exc


def _render_part(part: str, source: str, job: RenderJob, limits: TemplateLimits) -> str:
    template = compiled(source, part, job.strict, limits)
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(job.context):
            size += len(chunk)
            if size > limits.max_output_chars:
                raise LimitExceeded(f"rendered output exceeds {limits.max_output_chars} characters")
            out.append(chunk)
    except LimitExceeded as exc:
        raise TemplateProblem("limit", part, f"{part}: {exc}") from exc
    except MemoryError:
        out.clear()
        raise TemplateProblem("limit", part, f"{part}: {_MEMORY_TAIL}") from None
    except RecursionError as exc:
        raise TemplateProblem("limit", part, f"{part}: the template recurses too deeply") from exc
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
    except Exception as exc:  # whatever else customer code raises (a filter's assert, ...)
        message = f"{part}: {type(exc).__name__}: {exc}"[:500]
        raise TemplateProblem("render", part, message) from exc
    return "".join(out)


def render_in_process(job: RenderJob, limits: TemplateLimits = DEFAULT_LIMITS) -> Rendered:
    """Render one job here, with every soft limit (not the process-level hard limit):
    what the pool's workers run, and what a trusted caller may use directly."""
    token = _BUDGET.set(_Budget(limits.max_iterations, limits.timeout_seconds))
    try:
        out: Rendered = {}
        for part in PARTS:
            source = job.parts.get(part)
            out[part] = None if source is None else _render_part(part, source, job, limits)
        return out
    finally:
        _BUDGET.reset(token)


# ----------------------------------------------------------------------------- worker process

_FRAME = struct.Struct(">I")
_SPLIT_JOBS = 100  # a batch this large is shared between workers
_FLUSH_SECONDS = 0.005


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)


def _read_frame_sync(stream: Any) -> Any:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    return orjson.loads(stream.read(size))


def _write_frame_sync(stream: Any, obj: Any, flush: bool = True) -> None:
    body = _dumps(obj)
    stream.write(_FRAME.pack(len(body)) + body)
    if flush:
        stream.flush()


def _limit_cpu_for_next(cpu_seconds: int) -> None:
    # RLIMIT_CPU counts the process' whole life: move the soft limit to "now + budget" before
    # each message, so SIGXCPU ends a worker stuck on one message, not a long-lived one.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = math.ceil(usage.ru_utime + usage.ru_stime)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + cpu_seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _lower_limit(which: int, value: int) -> None:
    # Never above what the process already has (raising a hard limit is not allowed).
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def worker_main() -> None:
    """A render worker: reads job batches on stdin, writes one result frame per job."""
    limits = TemplateLimits(**json.loads(sys.argv[1]))
    _lower_limit(resource.RLIMIT_AS, limits.memory_bytes)
    _lower_limit(resource.RLIMIT_CORE, 0)
    _lower_limit(resource.RLIMIT_FSIZE, 0)  # no file writes
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the protocol stream
    _write_frame_sync(stdout, {"ready": True})
    while True:
        request = _read_frame_sync(stdin)
        if request is None:
            return
        sources: list[str] = request["sources"]
        last = len(request["jobs"]) - 1
        flushed = time.monotonic()
        for n, raw in enumerate(request["jobs"]):
            job = RenderJob(
                parts={p: sources[i] for p, i in raw["parts"].items()},
                context=raw["context"],
                strict=raw["strict"],
            )
            _limit_cpu_for_next(limits.cpu_seconds)
            try:
                result: Any = {"ok": render_in_process(job, limits)}
            except TemplateProblem as problem:
                result = {"error": problem.to_json()}
            except MemoryError:
                result = {"error": TemplateProblem("limit", "body", _MEMORY).to_json()}
            except Exception as exc:
                message = f"body: {type(exc).__name__}: {exc}"[:500]
                result = {"error": TemplateProblem("render", "body", message).to_json()}
            if result.get("error", {}).get("message", "").endswith(_MEMORY_TAIL):
                # The heap may stay fragmented near the limit: answer, then make way for a
                # fresh worker rather than fail the next message too.
                result["recycle"] = True
                _write_frame_sync(stdout, result)
                return
            # Answers go out every few ms (and at the end of the frame), not one write per
            # message: a wake-up of the parent per message costs more than the render. If the
            # worker dies with answers held back, the parent re-runs the unanswered messages
            # one per frame, so the blame still lands on the right one.
            now = time.monotonic()
            flush = n == last or now - flushed >= _FLUSH_SECONDS
            _write_frame_sync(stdout, result, flush)
            if flush:
                flushed = now


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MEMORY_TAIL = "the template uses too much memory"
_MEMORY = f"body: {_MEMORY_TAIL}"
_CRASHED = "body: the template exceeded the renderer's memory or CPU limit"
_TIMEOUT = "body: the template takes too long to render"


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._buffer = bytearray()

    @classmethod
    async def start(cls, limits: TemplateLimits, start_seconds: float = 30.0) -> _Worker:
        root = _ROOT
        code = (
            f"import sys; sys.path.insert(0, {root!r}); "
            "from libs.common.templating import worker_main; worker_main()"
        )
        # A clean environment: the worker runs customer code and needs none of our secrets.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            # Large strings in their own mappings, returned to the system when freed.
            "MALLOC_MMAP_THRESHOLD_": "131072",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            code,
            json.dumps(asdict(limits)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=env,
        )
        worker = cls(proc)
        try:
            ready = await asyncio.wait_for(worker.receive(), start_seconds)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            await worker.kill()
            raise RuntimeError("the template render worker did not start") from exc
        if ready != {"ready": True}:
            await worker.kill()
            raise RuntimeError(f"the template render worker said {ready!r}")
        return worker

    async def send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        body = _dumps(obj)
        self.proc.stdin.write(_FRAME.pack(len(body)) + body)
        await self.proc.stdin.drain()

    async def receive(self) -> Any:
        # Reads whatever the pipe holds and parses frames from it: answers that arrived
        # together cost one wake-up, not two reads each.
        assert self.proc.stdout is not None
        buf = self._buffer
        while True:
            if len(buf) >= _FRAME.size:
                (size,) = _FRAME.unpack_from(buf)
                end = _FRAME.size + size
                if len(buf) >= end:
                    frame = orjson.loads(buf[_FRAME.size : end])
                    del buf[:end]
                    return frame
            chunk = await self.proc.stdout.read(1 << 20)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), None)
            buf += chunk

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def terminate(self) -> None:
        # Without the loop (it may be closed already): a signal, reaped by the child watcher.
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(Exception):
            await self.proc.wait()


@dataclass
class TemplatePool:
    """Worker processes that render jobs under hard limits, usable from the event loop.

    `render(jobs)` sends jobs to a worker in frames of `frame_jobs` (compiled templates are
    cached there) and reads one result per job: a `Rendered` dict or a `TemplateProblem`. A
    job that outlives `timeout_seconds` (+ `grace_seconds`) or crashes its worker fails
    alone: the worker is killed and replaced, and the rest continue on the new one. Jobs not
    started before `deadline` (monotonic seconds) come back as None: callers retry them later,
    so one bad template cannot hold a transaction or a lease for long.
    """

    size: int = 2
    limits: TemplateLimits = DEFAULT_LIMITS
    grace_seconds: float = 1.0
    frame_jobs: int = 500
    start_timeout_seconds: float = 30.0
    restarts: int = 0
    _idle: list[_Worker] = field(default_factory=list)
    _slots: asyncio.Semaphore | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            # Workers' pipes belong to the loop that started them (a module-level pool may
            # outlive a loop: tests, `asyncio.run` twice).
            for worker in self._idle:
                worker.terminate()
            self._idle = []
            self._slots = asyncio.Semaphore(self.size)
            self._loop = loop
        return self._slots

    async def _acquire(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
        return await _Worker.start(self.limits, self.start_timeout_seconds)

    async def render(
        self, jobs: Sequence[RenderJob], *, deadline: float | None = None
    ) -> list[Rendered | TemplateProblem | None]:
        if not jobs:
            return []
        # Large batches use every worker; small ones stay on one (one pipe round trip).
        chunks = max(1, min(self.size, len(jobs) // _SPLIT_JOBS))
        step = -(-len(jobs) // chunks)
        parts = await asyncio.gather(
            *(self._render_chunk(jobs[i : i + step], deadline) for i in range(0, len(jobs), step))
        )
        return [r for part in parts for r in part]

    async def render_one(self, job: RenderJob) -> Rendered:
        """One job; raises its `TemplateProblem`."""
        (result,) = await self.render([job])
        if isinstance(result, TemplateProblem):
            raise result
        assert result is not None
        return result

    async def _render_chunk(
        self, jobs: Sequence[RenderJob], deadline: float | None
    ) -> list[Rendered | TemplateProblem | None]:
        results: list[Rendered | TemplateProblem | None] = []
        async with self._semaphore():
            worker = await self._acquire()
            clean = False
            try:
                careful = 0  # messages to run one per frame (after a worker died mid-frame)
                while len(results) < len(jobs):
                    if deadline is not None and time.monotonic() >= deadline:
                        results.extend([None] * (len(jobs) - len(results)))
                        break
                    done = len(results)
                    frame = jobs[done : done + (1 if careful else self.frame_jobs)]
                    worker, died = await self._run(worker, frame, results, deadline)
                    if died is None:  # the deadline passed mid-frame
                        results.extend([None] * (len(jobs) - len(results)))
                        break
                    if died:
                        careful = len(frame) - (len(results) - done)
                    elif careful:
                        careful -= len(results) - done
                clean = True
            finally:
                # A worker left mid-frame (cancelled caller) would answer the next caller
                # with stale results: only a worker at a frame boundary goes back.
                if clean and worker.alive:
                    self._idle.append(worker)
                else:
                    worker.terminate()
        return results

    async def _run(
        self,
        worker: _Worker,
        jobs: Sequence[RenderJob],
        results: list[Rendered | TemplateProblem | None],
        deadline: float | None = None,
    ) -> tuple[_Worker, bool | None]:
        """Send one frame and collect its results. A one-message frame whose worker times
        out or dies fails that message; a longer one keeps the answers received and
        returns died=True (the rest are re-run one per frame: answers may have been held
        back). Either way a fresh worker is returned. died=None: `deadline` (monotonic)
        passed before the frame was done; the busy worker was replaced."""
        sources: dict[str, int] = {}
        wire = []
        for job in jobs:
            refs = {}
            for part, source in job.parts.items():
                if source is not None:
                    refs[part] = sources.setdefault(source, len(sources))
            wire.append({"parts": refs, "context": job.context, "strict": job.strict})
        try:
            await worker.send({"sources": list(sources), "jobs": wire})
        except (ConnectionError, BrokenPipeError):
            await worker.kill()
            return await _Worker.start(self.limits, self.start_timeout_seconds), False
        per_job = self.limits.timeout_seconds + self.grace_seconds
        loop = asyncio.get_running_loop()
        for _ in jobs:
            wait = per_job
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            try:
                # One timer per answer (no task per read): answers stream back as ready.
                async with asyncio.timeout_at(loop.time() + wait):
                    reply = await worker.receive()
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
                await worker.kill()
                self.restarts += 1
                if isinstance(exc, TimeoutError) and wait < per_job:
                    return await _Worker.start(self.limits, self.start_timeout_seconds), None
                if len(jobs) > 1:
                    return await _Worker.start(self.limits, self.start_timeout_seconds), True
                reason = _TIMEOUT if isinstance(exc, TimeoutError) else _CRASHED
                results.append(TemplateProblem("limit", "body", reason))
                return await _Worker.start(self.limits, self.start_timeout_seconds), False
            if "ok" in reply:
                results.append(reply["ok"])
            else:
                results.append(TemplateProblem.from_json(reply["error"]))
            if reply.get("recycle"):
                await worker.kill()
                self.restarts += 1
                return await _Worker.start(self.limits, self.start_timeout_seconds), False
        return worker, False

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for worker in idle:
            await worker.kill()


__all__ = [
    "DEFAULT_LIMITS",
    "LIMIT_ERROR_CODE",
    "LIMIT_ERROR_MEANING",
    "PARTS",
    "BoundedEnvironment",
    "RenderJob",
    "Rendered",
    "TemplateLimits",
    "TemplatePool",
    "TemplateProblem",
    "check_source",
    "environment",
    "is_plain_substitution",
    "render_in_process",
]
