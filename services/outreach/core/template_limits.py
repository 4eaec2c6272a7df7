"""Hard limits on a template: what one render may cost in loops, calls, recursion, memory and
time, enforced as it runs and, where the source alone shows it, before it runs.

Messages are rendered when an action is decided, inside the consumer's batch transaction,
thousands a second, so the limits cost a counter and a comparison on the hot path:

- the sandbox intercepts the operators that grow values (``*``, ``**``, ``+``, ``%``) and
  refuses a result over the limits *before* computing it (``'x' * 10**10``, ``9**9**9``);
  intercepted operators are also never folded at compile time;
- every ``for`` loop iterates through :meth:`BoundedEnvironment.bounded_loop`, which counts
  iterations against the render's :class:`Budget`; ``range()`` is bounded by the same figure;
- every call (a macro, a method, a global, ``loop()`` of a recursive loop) goes through the
  sandbox's ``call``, which counts calls and the depth of template recursion, and checks a
  size before the methods that pad or repeat text (``center``, ``join``, ``replace``...);
- every filter is wrapped the same way, and every value built (a literal list, a ``~``
  concatenation, a call's result) or printed is measured, so no list or text over the size
  limit ever exists and the output is counted as it is produced;
- the render's deadline (CPU time of the rendering thread) is checked every few of those
  steps.

:mod:`.template_source` instruments a parsed template for these hooks and reads it for bombs
written as constants.

A limit crossed raises :class:`TemplateLimitError`, whose message names the limit
(``loop iterations over 10000``).
"""

from __future__ import annotations

import functools
import operator
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """What one render may cost. ``size`` bounds every text (characters), every list or mapping
    (items, counted through nested ones) and the whole output."""

    loop_iterations: int = 10_000
    calls: int = 10_000
    recursion_depth: int = 20
    size: int = 100_000
    number_bits: int = 64
    seconds: float = 0.05

    def __post_init__(self) -> None:
        if self.size < ALWAYS_FITS:
            raise ValueError(f"size must be at least {ALWAYS_FITS}")


# Any text this short is within every size limit (RenderLimits refuses a smaller one).
ALWAYS_FITS = 4096
DEFAULT_LIMITS = RenderLimits()


class TemplateLimitError(Exception):
    """A render (or a source) that crosses a limit; the message names it. Not a ValueError
    or TypeError, so nothing in Jinja that tolerates those swallows it."""


class Budget:
    """What one render has spent so far; see the module docstring."""

    __slots__ = ("calls", "cpu_from", "depth", "iterations", "limits", "ops", "started")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.iterations = 0
        self.calls = 0
        self.ops = 0  # operators: not limited by count, only by time
        self.depth = 0
        # The thread's CPU clock is a system call (several microseconds), as much as a whole
        # small render: it is first read at the first check, which most renders never reach.
        self.started = time.perf_counter()
        self.cpu_from: float | None = None

    def check_time(self) -> None:
        # CPU time of this thread, not the wall clock: a render on a machine that is busy
        # elsewhere (or waiting for the GIL) is not charged for the time it did not run. It
        # never outruns the wall clock, so the CPU clock is asked only once the limit has
        # passed on the wall clock; what ran before the first check counts at its wall time.
        seconds = self.limits.seconds
        wall = time.perf_counter() - self.started
        if self.cpu_from is None:
            self.cpu_from = time.thread_time() - wall
        elif wall > seconds and time.thread_time() - self.cpu_from > seconds:
            raise TemplateLimitError(f"render time over {seconds * 1000:g} ms")

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        limit = self.limits.loop_iterations
        for item in iterable:
            self.iterations += 1
            if self.iterations > limit:
                raise TemplateLimitError(f"loop iterations over {limit}")
            if not self.iterations & 63:
                self.check_time()
            yield item


_BUDGET: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


def limits_now() -> RenderLimits:
    budget = _BUDGET.get()
    return DEFAULT_LIMITS if budget is None else budget.limits


def run_budgeted(limits: RenderLimits, render: Callable[[Budget], T]) -> T:
    """``render(budget)`` with a new ``budget`` in force for every guard this module
    installs."""
    budget = Budget(limits)
    token = _BUDGET.set(budget)
    try:
        return render(budget)
    finally:
        _BUDGET.reset(token)


# -- sizes ------------------------------------------------------------------------------------


def _too_big_text(limits: RenderLimits) -> TemplateLimitError:
    return TemplateLimitError(f"text over {limits.size} characters")


def _too_many_items(limits: RenderLimits) -> TemplateLimitError:
    return TemplateLimitError(f"list over {limits.size} items")


def size_of(value: Any, limits: RenderLimits) -> int:
    """The size of ``value`` as it would print: characters of text, items of containers through
    nested ones (a shared one counted each time it appears, as it would print). Stops and
    raises as soon as it is over ``limits.size``, so it never walks far."""
    kind = type(value)
    if kind is str or kind is bytes:
        if len(value) > limits.size:
            raise _too_big_text(limits)
        return len(value)
    if kind is int or kind is float or kind is bool or value is None:
        return 1
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
            if total > limits.size:
                raise _too_big_text(limits)
            continue
        if isinstance(item, Namespace):
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
            continue
        if isinstance(item, Mapping):
            total += len(item) + 1
            children: Iterable[Any] = (*item.keys(), *item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item) + 1
            children = item
        else:
            total += 1
            children = ()
        if total > limits.size:
            raise _too_many_items(limits)
        # Numbers are counted with their container; only what can hold more is walked.
        stack.extend([c for c in children if type(c) not in _SCALARS])
    return total


_SCALARS = frozenset({int, float, bool, type(None)})


def checked(value: Any) -> Any:
    """``value`` if it is within the size limit; raises otherwise."""
    kind = type(value)
    if kind in _SCALARS or (kind is str and len(value) <= ALWAYS_FITS):
        return value  # the common case, without looking the limits up
    size_of(value, limits_now())
    return value


# -- operators --------------------------------------------------------------------------------

BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "+": operator.add,
    "%": operator.mod,
}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _over(limits: RenderLimits, value: Any) -> TemplateLimitError:
    return (_too_big_text if isinstance(value, str | bytes) else _too_many_items)(limits)


def precheck_binop(op: str, left: Any, right: Any, limits: RenderLimits) -> None:
    bits = limits.number_bits
    both_int = is_int(left) and is_int(right)
    if op == "**":
        # |left| ** right has at least right * (bit_length(left) - 1) bits.
        growing = both_int and right > 0 and abs(left) > 1
        if growing and right * (abs(left).bit_length() - 1) > bits:
            raise TemplateLimitError(f"number over {bits} bits")
    elif op == "*":
        if both_int:
            if left.bit_length() + right.bit_length() > bits + 1:
                raise TemplateLimitError(f"number over {bits} bits")
        elif is_int(right) or is_int(left):
            seq, times = (left, right) if is_int(right) else (right, left)
            sized = isinstance(seq, str | bytes | list | tuple)
            if sized and times > 0 and size_of(seq, limits) * times > limits.size:
                raise _over(limits, seq)
    elif op == "+":
        same = isinstance(left, str | bytes | list | tuple) and isinstance(right, type(left))
        if same and size_of(left, limits) + size_of(right, limits) > limits.size:
            raise _over(limits, left)
    elif op == "%" and isinstance(left, str):
        check_printf(left, limits)


def guarded_binop(op: str, left: Any, right: Any) -> Any:
    """``left <op> right`` if its result is within the limits, refused before it is computed
    otherwise."""
    limits = limits_now()
    precheck_binop(op, left, right, limits)
    return checked(BINOPS[op](left, right))


_DIGITS = re.compile(r"\d+")
_STAR_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\*|%(?:\([^)]*\))?[-#0 +]*\d*\.\*")


def _check_widths(spec: str, limits: RenderLimits) -> None:
    for digits in _DIGITS.findall(spec):
        if len(digits) > 9 or int(digits) > limits.size:
            raise TemplateLimitError(f"text over {limits.size} characters")


def check_printf(fmt: str, limits: RenderLimits) -> None:
    """Refuse a ``%`` format whose widths would print more than the size limit."""
    if "*" in fmt and _STAR_WIDTH.search(fmt):
        raise TemplateLimitError("format width from an argument ('*') is not allowed")
    _check_widths(fmt, limits)


def check_format(fmt: str, limits: RenderLimits) -> None:
    """Refuse a ``str.format`` string whose widths would print more than the size limit."""
    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the call itself reports the bad format
    for _, _, spec, _ in parts:
        if spec and "{" in spec:
            raise TemplateLimitError("format width from an argument ('{}') is not allowed")
        if spec:
            _check_widths(spec, limits)


# -- calls and filters ------------------------------------------------------------------------


def _width_over(limits: RenderLimits, width: Any) -> None:
    if is_int(width) and width > limits.size:
        raise _too_big_text(limits)


def _replace_over(limits: RenderLimits, text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        times = len(text) + 1 if old == "" else text.count(old)
        if is_int(count) and count >= 0:
            times = min(times, count)
        if len(text) + times * (len(new) - len(old)) > limits.size:
            raise _too_big_text(limits)


def _join_over(limits: RenderLimits, sep: Any, items: list[Any]) -> None:
    if len(items) * len(str(sep)) + sum(size_of(i, limits) for i in items) > limits.size:
        raise _too_big_text(limits)


def _check_str_method(
    name: str, text: str | bytes, args: tuple[Any, ...], limits: RenderLimits
) -> None:
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _width_over(limits, args[0])
    elif name == "expandtabs":
        tab = args[0] if args and is_int(args[0]) else 8
        tabs = text.count("\t") if isinstance(text, str) else text.count(b"\t")
        if len(text) + tabs * tab > limits.size:
            raise _too_big_text(limits)
    elif name == "replace" and len(args) >= 2:
        _replace_over(limits, text, args[0], args[1], args[2] if len(args) > 2 else -1)
    elif name in ("translate", "maketrans"):
        raise TemplateLimitError(f"str.{name} is not allowed in a template")


def _lines(text: Any) -> int:
    return str(text).count("\n") + 1


# Checks run before a filter, by name: each refuses arguments that would build a value over
# the size limit. Filters not listed build at most about what they are given.
def _pre_center(limits: RenderLimits, value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    _width_over(limits, width)


def _pre_indent(limits: RenderLimits, value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    pad = len(width) if isinstance(width, str) else width if is_int(width) else 0
    if len(str(value)) + _lines(value) * pad > limits.size:
        raise _too_big_text(limits)


def _pre_wordwrap(limits: RenderLimits, value: Any, *args: Any, **kwargs: Any) -> None:
    wrap = kwargs.get("wrapstring") or (args[2] if len(args) > 2 else None) or "\n"
    if len(str(value)) * max(len(str(wrap)), 1) > limits.size:
        raise _too_big_text(limits)


def _pre_replace(
    limits: RenderLimits, value: Any, old: Any = "", new: Any = "", count: Any = None, **__: Any
) -> None:
    _replace_over(limits, str(value), old, new, -1 if count is None else count)


def _pre_format(limits: RenderLimits, value: Any, *_: Any, **__: Any) -> None:
    check_printf(str(value), limits)


def _pre_batch(
    limits: RenderLimits, value: Any, count: Any = 1, fill_with: Any = None, **__: Any
) -> None:
    if is_int(count) and count > limits.size:
        raise _too_many_items(limits)


def _pre_tojson(limits: RenderLimits, value: Any, indent: Any = None, **__: Any) -> None:
    width = len(indent) if isinstance(indent, str) else indent if is_int(indent) else 0
    if width > 16:
        raise TemplateLimitError("tojson indent over 16")


def _pre_urlize(limits: RenderLimits, value: Any, *args: Any, **kwargs: Any) -> None:
    extra = sum(len(str(kwargs.get(k) or "")) for k in ("target", "rel"))
    if extra * (str(value).count(" ") + 1) > limits.size:
        raise _too_big_text(limits)


PRECHECKS: dict[str, Callable[..., None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "wordwrap": _pre_wordwrap,
    "replace": _pre_replace,
    "format": _pre_format,
    "batch": _pre_batch,
    "slice": _pre_batch,
    "tojson": _pre_tojson,
    "urlize": _pre_urlize,
}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    pre = PRECHECKS.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        limits = DEFAULT_LIMITS if budget is None else budget.limits
        if budget is not None:
            _count_call(budget)
        if name == "join" and len(args) > skip:
            items = list(args[skip])
            sep = args[skip + 1] if len(args) > skip + 1 else kwargs.get("d", "")
            _join_over(limits, sep, items)
            args = (*args[:skip], items, *args[skip + 1 :])
        elif pre is not None and len(args) > skip:
            pre(limits, *args[skip:], **kwargs)
        return checked(func(*args, **kwargs))

    return guarded


def _count_call(budget: Budget) -> None:
    budget.calls += 1
    if budget.calls > budget.limits.calls:
        raise TemplateLimitError(f"calls over {budget.limits.calls}")
    if not budget.calls & 7:
        budget.check_time()


# -- the environment --------------------------------------------------------------------------


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the limits of this module (see the module docstring)."""

    intercepted_binops = frozenset(BINOPS)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.globals["range"] = self.bounded_range

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.ops += 1
            if not budget.ops & 63:
                budget.check_time()
        return guarded_binop(operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format(value.__self__, limits_now())
        return wrapped

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget = _BUDGET.get()
        limits = DEFAULT_LIMITS if budget is None else budget.limits
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes) and not isinstance(__obj, functools.partial):
            _check_str_method(getattr(__obj, "__name__", ""), owner, args, limits)
        elif isinstance(owner, BoundedEnvironment):  # bounded_loop, checked: our own hooks
            return ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        if budget is None:
            return checked(
                ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
            )
        _count_call(budget)
        if isinstance(__obj, LoopContext) and args:  # loop(children) of a recursive loop
            args = (budget.iterate(args[0]), *args[1:])
        # Calls nest only when the callee runs template code (a macro, a block, ``caller()``,
        # ``loop()``): the nesting of calls is the depth of the template's recursion.
        budget.depth += 1
        try:
            if budget.depth > limits.recursion_depth:
                raise TemplateLimitError(f"recursion depth over {limits.recursion_depth}")
            result = ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        return checked(result)

    def bounded_loop(self, iterable: Any) -> Any:
        """The iterable of a ``for`` loop, counted against the render's budget."""
        budget = _BUDGET.get()
        return iterable if budget is None else budget.iterate(iterable)

    def checked(self, value: Any) -> Any:
        """A built value (a literal list, a ``~`` concatenation), refused over the size limit."""
        return checked(value)

    def bounded_range(self, *args: int) -> range:
        """``range()`` no longer than the loop iteration limit (nothing could iterate more)."""
        limit = limits_now().loop_iterations
        found = range(*args)
        if len(found) > limit:
            raise TemplateLimitError(f"range over {limit}")
        return found
