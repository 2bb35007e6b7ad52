"""Gradient clipping in every mode, including where Paddle's own clip classes fail.

In PaddlePaddle 3.3.1 ``ClipGradByValue`` has no PIR implementation (NotImplementedError) and
``ClipGradByGlobalNorm`` fails under the legacy IR (``paddle.sqrt``/``Tensor.sum`` reject legacy
Variables). There we build the same arithmetic as the dygraph implementation ourselves, so the
numbers equal dygraph's; everywhere else the clip object runs as usual.
"""

from __future__ import annotations

import functools

import paddle
from paddle.base.layer_helper import LayerHelper
from paddle.nn.clip import (ClipGradBase, ClipGradByGlobalNorm, ClipGradByValue,
                            _can_inplace_clip_grad, _squared_l2_norm, merge_selected_rows)

from . import _compat, rule
from ._settings import exact_double


def rule_clip_bounds(grad_clip):
    """``(min, max)`` when ``grad_clip`` is Paddle's own ``ClipGradByValue`` with number
    bounds: ``rule.clip_by_value`` then does its work, in dygraph (the fused kernel runs the
    same function, generated); None: the object runs its own code (a subclass; bounds set to
    None or a Tensor after construction)."""
    if type(grad_clip) is ClipGradByValue and all(
            type(bound) in (float, int) and exact_double(bound)
            for bound in (grad_clip.min, grad_clip.max)):
        return grad_clip.min, grad_clip.max
    return None


def clip_gradients(grad_clip, params_grads):
    """``grad_clip(params_grads)``, working around the two mode gaps above; in dygraph a
    ``ClipGradByValue`` is ``rule.clip_by_value`` (its ``_dygraph_clip``, op for op)."""
    if grad_clip is None:
        return params_grads
    bounds = rule_clip_bounds(grad_clip)
    if bounds is not None and _compat.in_dygraph():
        with paddle.no_grad():
            return [(p, g if getattr(p, "need_clip", True) is False
                     else rule.clip_by_value(g, *bounds))
                    for p, g in params_grads if g is not None]
    if _compat.in_pir() and type(grad_clip)._pir_clip is ClipGradBase._pir_clip:
        # Its dygraph implementation is plain tensor ops (paddle.clip), valid under PIR.
        return grad_clip._dygraph_clip(params_grads)
    if _compat.in_legacy_static() and isinstance(grad_clip, ClipGradByGlobalNorm):
        return _legacy_global_norm_clip(grad_clip, params_grads)
    return grad_clip(params_grads)


def _legacy_op(op_type, inputs, dtype, attrs=None, output="Out"):
    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(dtype)
    helper.append_op(type=op_type, inputs=inputs, outputs={output: out}, attrs=attrs or {})
    return out


def _legacy_sum(values, dtype):
    """``paddle.stack(values).sum()``, the dygraph implementation's reduction."""
    stacked = _legacy_op("stack", {"X": values}, dtype, {"axis": 0}, output="Y")
    return _legacy_op("reduce_sum", {"X": stacked}, dtype,
                      {"dim": [0], "keep_dim": False, "reduce_all": True})


def _legacy_cast(value, dtype):
    if _compat.dtype_name(value.dtype) == dtype:
        return value
    return _legacy_op("cast", {"X": value}, dtype,
                      {"in_dtype": value.dtype, "out_dtype": _var_type(dtype)})


def _var_type(dtype):
    return paddle.base.framework.convert_np_dtype_to_dtype_(dtype)


def _legacy_global_norm_clip(grad_clip, params_grads):
    """The dygraph ``ClipGradByGlobalNorm._dygraph_clip`` arithmetic, as legacy-IR ops:
    squared norms summed per dtype class, the sums combined, then
    ``g * clip_norm / max(sqrt(total), clip_norm)``."""
    by_class = {"low": [], "float32": [], "float64": []}
    for param, grad in params_grads:
        if grad is None or getattr(param, "need_clip", True) is False:
            continue
        square = _squared_l2_norm(grad)
        name = _compat.dtype_name(square.dtype)
        by_class["low" if _compat.is_low_precision(square.dtype) else name].append(square)
    if not any(by_class.values()):
        return params_grads
    sum_dtype = "float64" if by_class["float64"] else "float32"
    partial_sums = []
    for kind in ("low", "float32", "float64"):
        if by_class[kind]:
            kind_dtype = by_class[kind][0].dtype
            partial = _legacy_sum(by_class[kind], kind_dtype)
            partial_sums.append(_legacy_cast(partial, sum_dtype))
    total = _legacy_sum(partial_sums, sum_dtype)
    norm = _legacy_op("sqrt", {"X": total}, sum_dtype)
    limit = _legacy_op("fill_constant", {}, sum_dtype,
                       {"shape": [1], "value": float(grad_clip.clip_norm),
                        # str_value keeps a float64 limit exact (value is a float32 attribute)
                        "str_value": repr(float(grad_clip.clip_norm)),
                        "dtype": _var_type(sum_dtype)})
    larger = _legacy_op("elementwise_max", {"X": norm, "Y": limit}, sum_dtype, {"axis": -1})
    scale = _legacy_op("elementwise_div", {"X": limit, "Y": larger}, sum_dtype, {"axis": -1})
    clipped = []
    for param, grad in params_grads:
        if grad is None:
            continue
        if getattr(param, "need_clip", True) is False:
            clipped.append((param, grad))
            continue
        factor = _legacy_cast(scale, _compat.dtype_name(grad.dtype))
        clipped.append((param, _legacy_op("elementwise_mul", {"X": grad, "Y": factor},
                                          grad.dtype, {"axis": -1})))
    return clipped



# ---- ClipGradByGlobalNorm with flat buckets (dygraph) ----
# The buckets' squared norms come from the kernel (pm_squared_norms, Paddle's reduction bit for
# bit); everything else is the built-in's own arithmetic, op for op, on the same values.

def squared_norm(grad):
    """The squared L2 norm ``ClipGradByGlobalNorm`` takes of one gradient (shape [1]); a
    SelectedRows one merged first, as the built-in does."""
    if _compat.is_sparse(grad):
        grad = merge_selected_rows(grad)._get_tensor_from_selected_rows()
    return _squared_l2_norm(grad)


# The kernel's squared norms equal squared_l2_norm's bit for bit, NaNs included, for gradients
# of at most one leaf of Paddle's tree reduction (1024 AVX packets); above that, where two NaNs
# meet, the NaN Paddle keeps varies from node to node of the tree (inlined copies of Eigen's
# recursion compiled differently), which the kernel does not reproduce.
_LEAF_ELEMENTS = {"float32": 8192, "float64": 4096}


def fix_large_nan_norms(norms, dtype, params, sizes):
    """``norms`` (the kernel's, one per member of ``params``, of ``dtype``; ``sizes`` their
    numbers of elements) with the entries of members larger than a leaf replaced by Paddle's
    own ``squared_l2_norm`` when ``norms`` holds a NaN (only then can the two differ: in which
    NaN). Costs one sync per step, for buckets with such members only."""
    limit = _LEAF_ELEMENTS.get(dtype)
    if limit is None or max(sizes, default=0) <= limit:
        return norms
    large = [j for j, size in enumerate(sizes) if size > limit]
    if not bool(paddle.isnan(norms).any()):
        return norms
    grads = _compat.all_gradients(params)
    parts = [norms[j:j + 1] for j in range(len(params))]
    for j in large:
        if grads[j] is not None:  # (else the member takes no part this step)
            parts[j] = _squared_l2_norm(grads[j]).reshape([1])
    return paddle.concat(parts)


def global_norm_factor(grad_clip, sums_by_dtype):
    """``ClipGradByGlobalNorm``'s factor (a [1] tensor), or None where it skips clipping
    this step (``auto_skip_clip``). ``sums_by_dtype`` maps "float16" (any low precision),
    "float32" and "float64" to the 1-D tensor of that class's squared norms in the built-in's
    order (absent: none); ``paddle.stack(parts).sum()`` of the built-in sums the same values
    as ``.sum()`` of their concatenation."""
    sum_dtype = "float64" if "float64" in sums_by_dtype else "float32"
    totals = []
    for kind in ("float16", "float32", "float64"):
        if kind in sums_by_dtype:
            total = sums_by_dtype[kind].sum()
            totals.append(total if kind == sum_dtype else total.astype(sum_dtype))
    norm = paddle.sqrt(paddle.stack(totals).sum())
    limit = paddle.full(shape=[1], dtype=sum_dtype, fill_value=grad_clip.clip_norm)
    if not grad_clip.auto_skip_clip:
        return paddle.divide(x=limit, y=paddle.maximum(x=norm, y=limit))
    if norm > limit:
        return paddle.divide(x=limit, y=norm)
    return None


def scale_gradients(params_grads, factor):
    """The built-in's multiply of each gradient (of a parameter with ``need_clip``) by the
    global-norm ``factor``: in place where Paddle can, else into a new gradient."""
    scaled = []
    for param, grad in params_grads:
        if getattr(param, "need_clip", True) is not False and factor is not None:
            factor_here = factor.astype(grad.dtype) if factor.dtype != grad.dtype else factor
            if _can_inplace_clip_grad(grad, factor_here):
                grad.multiply_(factor_here)
            else:
                grad = paddle.multiply(grad, factor_here)
        scaled.append((param, grad))
    return scaled


def check_clip_norm(grad_clip):
    """Raise what Paddle's ``clip_by_norm`` raises for ``grad_clip.clip_norm`` (the built-in
    checks it at every step: a TypeError for another type, a ValueError for one <= 0 or
    NaN), by running Paddle's own op on one zero (about 7 us), before anything is written."""
    paddle._C_ops.clip_by_norm(_one_zero(), grad_clip.clip_norm)


def check_clip_bounds(grad_clip):
    """Raise what Paddle's ``clip`` raises for ``ClipGradByValue``'s bounds (min > max, a NaN
    bound, ...), by running Paddle's own op on one zero, before anything is written."""
    paddle._C_ops.clip(_one_zero(), grad_clip.min, grad_clip.max)


@functools.lru_cache(maxsize=None)
def _one_zero():
    with _compat.isolated():
        return paddle.zeros([1])
