"""A template's source, read before it runs: instrumented so every loop and every built value
meets the render's budget (:mod:`.template_limits`), and checked for bombs written as
constants — also in branches the sample card does not reach: constant arithmetic over the
limits, ``range()`` over the iteration limit, and nested loops over constant ranges whose
product is over it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.visitor import NodeTransformer

from services.outreach.core.template_limits import (
    BINOPS,
    DEFAULT_LIMITS,
    RenderLimits,
    TemplateLimitError,
    is_int,
    precheck_binop,
)


def _hook(name: str, node: nodes.Node) -> nodes.Expr:
    return nodes.Call(nodes.EnvironmentAttribute(name), [node], [], None, None, lineno=node.lineno)


class _Instrument(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _hook("bounded_loop", node.iter)
        return node

    def _built(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node, nodes.Tuple) and node.ctx != "load":
            return node
        return _hook("checked", node)

    visit_List = visit_Tuple = visit_Dict = visit_Concat = _built


def instrument(tree: nodes.Template) -> nodes.Template:
    """Route every loop through the iteration budget and every built value through the size
    check (see the module docstring). Changes ``tree`` in place and returns it."""
    _Instrument().visit(tree)
    return tree


_NOT_CONSTANT = object()


def _constant(node: nodes.Node, limits: RenderLimits, known: dict[int, Any]) -> Any:
    """The value of a constant expression (refused over the limits), or _NOT_CONSTANT; each
    node is evaluated once (``known``), so a long chain of operators costs its length."""
    if id(node) in known:
        return known[id(node)]
    value: Any = _NOT_CONSTANT
    if isinstance(node, nodes.Const):
        value = node.value
    elif isinstance(node, nodes.BinExpr):
        left = _constant(node.left, limits, known)
        right = _constant(node.right, limits, known)
        if left is not _NOT_CONSTANT and right is not _NOT_CONSTANT:
            if node.operator in BINOPS:
                precheck_binop(node.operator, left, right, limits)
            try:
                op = BINOPS.get(node.operator) or _PLAINBINOPS[node.operator]
                value = op(left, right)
            except Exception:  # a division by zero, a type error: the render reports it
                value = _NOT_CONSTANT
    elif isinstance(node, nodes.Neg | nodes.Pos):
        inner = _constant(node.node, limits, known)
        if isinstance(inner, int | float) and not isinstance(inner, bool):
            value = -inner if isinstance(node, nodes.Neg) else inner
    known[id(node)] = value
    return value


_PLAINBINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "-": operator.sub,
    "/": operator.truediv,
    "//": operator.floordiv,
}


def _range_size(node: nodes.Node, limits: RenderLimits) -> int | None:
    if not (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "range"
        and not node.kwargs
    ):
        return None
    args = [_constant(a, limits, {}) for a in node.args]
    if not args or any(not is_int(a) for a in args):
        return None
    try:
        return len(range(*args))
    except (ValueError, TypeError):
        return None


def static_check(tree: nodes.Template, limits: RenderLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`TemplateLimitError` for a bomb written as constants anywhere in ``tree``."""
    known: dict[int, Any] = {}
    for node in tree.find_all(nodes.BinExpr):
        _constant(node, limits, known)
    for call in tree.find_all(nodes.Call):
        size = _range_size(call, limits)
        if size is not None and size > limits.loop_iterations:
            raise TemplateLimitError(f"range over {limits.loop_iterations}")
    _nested_loops(tree, 1, limits)


def _nested_loops(node: nodes.Node, outer: int, limits: RenderLimits) -> None:
    for child in node.iter_child_nodes():
        times = outer
        if isinstance(child, nodes.For):
            size = _range_size(child.iter, limits)
            times = outer * (size if size is not None else 1)
            if times > limits.loop_iterations:
                raise TemplateLimitError(f"loop iterations over {limits.loop_iterations}")
        _nested_loops(child, times, limits)
