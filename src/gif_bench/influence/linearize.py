"""Linearize a function once, then apply its Jacobian cheaply: ``v ↦ J_f(θ̂) v``.

Like ``torch.func.linearize``: ``f``'s forward-mode derivative is traced into an FX graph
(``make_fx``) with θ̂ baked in as constants, and every node that depends on constants only
(the primal computation) is evaluated once and stored. On top of that, nodes whose value is
known to be exactly zero are removed before folding: a product of anything with an all-zero
constant, a convolution with an all-zero weight, a sum with a zero term. That is what makes
the unit-restricted products of :mod:`~gif_bench.influence.masked` cheap: their extra
parameters sit at zero, and the tangent work they would otherwise multiply by zero is never
run. The rules only ever replace a node by an exact zero or by its other operand.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor, fx
from torch.fx.experimental import const_fold
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._pytree import tree_flatten, tree_unflatten

aten = torch.ops.aten

# op → argument positions of which any one being zero makes the (single) output zero
_ZERO_IF_ANY = {
    aten.mul.Tensor: (0, 1),
    aten.mm.default: (0, 1),
    aten.bmm.default: (0, 1),
}
# ops that create zeros (a zero stays zero unless something writes into it)
_ZEROS = (
    aten.zeros.default,
    aten.zeros_like.default,
    aten.new_zeros.default,
    aten._new_zeros_with_same_feature_meta.default,
)
# op → the argument whose zero makes the output zero (the op is linear in it)
_ZERO_IF_ARG = {
    aten.alias.default: 0,
    aten.detach.default: 0,
    aten.lift_fresh_copy.default: 0,
    aten.view.default: 0,
    aten._unsafe_view.default: 0,
    aten.reshape.default: 0,
    aten.expand.default: 0,
    aten.t.default: 0,
    aten.permute.default: 0,
    aten.clone.default: 0,
    aten._to_copy.default: 0,
    aten.neg.default: 0,
    aten.sum.dim_IntList: 0,
    aten.sum.default: 0,
    aten.div.Tensor: 0,
    aten.mul.Scalar: 0,
    aten.threshold_backward.default: 0,
    aten.max_pool2d_with_indices_backward.default: 0,
    aten.index_select.default: 0,
}


def _is_inplace(node: fx.Node) -> bool:
    return (
        node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable
    )


def _meta(node: fx.Node):
    return node.meta.get("val")


def _drop_known_zeros(gm: fx.GraphModule) -> None:
    """Replace every node known to be exactly zero by a fresh ``zeros`` (removed later when
    unused), every ``a + 0`` / ``index_add(a, ·, ·, 0)`` by ``a``, and copies that change
    nothing by their input."""
    graph = gm.graph
    zero: set[fx.Node] = set()
    mutated = {n.args[0] for n in graph.nodes if _is_inplace(n) and isinstance(n.args[0], fx.Node)}

    def is_zero(a) -> bool:
        return isinstance(a, fx.Node) and a in zero

    def make_zeros(node: fx.Node) -> fx.Node:
        val = _meta(node)
        with graph.inserting_before(node):
            z = graph.call_function(aten.zeros.default, (list(val.shape),), {"dtype": val.dtype, "device": val.device})
        z.meta["val"] = val
        zero.add(z)
        return z

    def replace(node: fx.Node, new: fx.Node) -> None:
        node.replace_all_uses_with(new)
        graph.erase_node(node)

    for node in list(graph.nodes):
        if node.op == "get_attr":
            value = getattr(gm, node.target, None)
            if isinstance(value, Tensor) and value.numel() and not value.is_sparse and not bool(value.any()):
                zero.add(node)
            continue
        if node.op != "call_function" or _is_inplace(node) or node in mutated:
            continue
        t, a = node.target, node.args
        val = _meta(node)
        if not isinstance(val, Tensor) and t is not aten.convolution_backward.default:
            continue
        if t in _ZEROS:
            zero.add(node)
        elif t in _ZERO_IF_ANY and any(is_zero(a[i]) for i in _ZERO_IF_ANY[t] if i < len(a)):
            replace(node, make_zeros(node))
        elif t in _ZERO_IF_ARG and is_zero(a[_ZERO_IF_ARG[t]]):
            replace(node, make_zeros(node))
        elif t is aten.convolution.default and (is_zero(a[0]) or is_zero(a[1])) and (a[2] is None or is_zero(a[2])):
            replace(node, make_zeros(node))
        elif t is aten.add.Tensor and len(a) == 2 and not node.kwargs:
            x, y = a
            if is_zero(x) and is_zero(y):
                replace(node, make_zeros(node))
            elif is_zero(y) and isinstance(x, fx.Node) and _same(x, val) and x not in mutated:
                replace(node, x)
            elif is_zero(x) and isinstance(y, fx.Node) and _same(y, val) and y not in mutated:
                replace(node, y)
        elif t is aten.index_add.default and is_zero(a[3]) and isinstance(a[0], fx.Node) and _same(a[0], val):
            if a[0] not in mutated:
                replace(node, a[0])
        elif t is aten.convolution_backward.default:
            _prune_convolution_backward(node, is_zero, make_zeros, replace)
        elif _is_plain_copy(node) and a[0] not in mutated:
            replace(node, a[0])
    graph.eliminate_dead_code()
    gm.recompile()


def _is_plain_copy(node: fx.Node) -> bool:
    """A same-shape ``expand``, or a ``_to_copy`` that changes nothing but the storage, of a
    contiguous tensor: the value of its input (forward AD inserts these around tangents)."""
    src = node.args[0] if node.args else None
    val, src_val = _meta(node), _meta(src) if isinstance(src, fx.Node) else None
    if not isinstance(val, Tensor) or not isinstance(src_val, Tensor) or src_val.shape != val.shape:
        return False
    if node.target is aten.expand.default:
        return True
    if node.target is not aten._to_copy.default or set(node.kwargs) - {"dtype", "layout", "device"}:
        return False
    return (
        src_val.is_contiguous()
        and node.kwargs.get("dtype", src_val.dtype) == src_val.dtype
        and node.kwargs.get("device", src_val.device) == src_val.device
        and node.kwargs.get("layout", torch.strided) == src_val.layout
    )


def _same(node: fx.Node, val: Tensor) -> bool:
    other = _meta(node)
    return isinstance(other, Tensor) and other.shape == val.shape and other.dtype == val.dtype


def _prune_convolution_backward(node: fx.Node, is_zero, make_zeros, replace) -> None:
    """(grad_input, grad_weight, grad_bias): zero outputs are not computed."""
    if len(node.args) != 11:
        return
    grad_out, inp, weight = node.args[:3]
    mask = list(node.args[-1])
    zero_out = [is_zero(grad_out) or is_zero(weight), is_zero(grad_out) or is_zero(inp), is_zero(grad_out)]
    users = [u for u in node.users if u.target is operator.getitem and isinstance(u.args[1], int)]
    if len(users) != len(node.users):
        return
    for u in users:
        if mask[u.args[1]] and zero_out[u.args[1]]:
            replace(u, make_zeros(u))
    keep = [m and not z for m, z in zip(mask, zero_out)]
    if keep != mask:
        node.args = (*node.args[:-1], keep)


def _shared_fake_mode() -> AbstractContextManager:
    """A tracing context holding one ``FakeTensorMode`` for ``make_fx``.

    ``make_fx`` records each node's value as a fake tensor; with no fake mode in scope it makes
    a new ``FakeTensorMode`` per node, each capturing a Python stack trace, which is over half
    the time of a trace. With one mode in scope every node uses it, and the graph is the same.
    (Private torch API: where it is missing, tracing goes on without it, only slower.)
    """
    try:
        from torch._guards import TracingContext, tracing
        from torch._subclasses.fake_tensor import FakeTensorMode
    except ImportError:
        return nullcontext()
    return tracing(TracingContext(FakeTensorMode(allow_fallback_kernels=True)))


def linearized(fn: Callable[[dict[str, Tensor]], object], at: Mapping[str, Tensor]) -> Callable:
    """``v ↦ J_fn(at) v`` for ``fn`` mapping a tensor dict to a tensor pytree.

    The primal computation runs once, on the first call; each call after that runs only the
    tangent operations that are not known to be zero. The returned function holds the
    primal values it needs (activations and the like) for as long as it lives.
    """
    primals, spec = tree_flatten(dict(at))
    out_spec = []

    def tangent_graph(*tangents: Tensor) -> list[Tensor]:
        with fwad.dual_level():
            duals = [fwad.make_dual(p, t) for p, t in zip(primals, tangents)]
            outputs, tree = tree_flatten(fn(tree_unflatten(duals, spec)))
            out_spec.append(tree)
            result = []
            for o in outputs:
                primal, tangent = fwad.unpack_dual(o)
                result.append(torch.zeros_like(primal) if tangent is None else tangent)
        return result

    placeholders = [p.new_empty(()).expand_as(p) for p in primals]
    with _shared_fake_mode():
        gm = make_fx(tangent_graph)(*placeholders)
    _drop_known_zeros(gm)
    with warnings.catch_warnings():  # const_fold warns about attributes it adds itself
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")
        folded = const_fold.split_const_subgraphs(gm)

    def apply(v: Mapping[str, Tensor]) -> object:
        flat, v_spec = tree_flatten(dict(v))
        if v_spec != spec:
            raise ValueError("the vector must have the keys of the point it was linearized at")
        return tree_unflatten(list(folded(*flat)), out_spec[-1])

    apply.graph_module = folded  # for inspection: the tangent operations a call runs
    return apply
