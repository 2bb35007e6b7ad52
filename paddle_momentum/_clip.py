"""Gradient clipping in every mode, including where Paddle's own clip classes fail.

In PaddlePaddle 3.3.1 ``ClipGradByValue`` has no PIR implementation (NotImplementedError) and
``ClipGradByGlobalNorm`` fails under the legacy IR (``paddle.sqrt``/``Tensor.sum`` reject legacy
Variables). There we build the same arithmetic as the dygraph implementation ourselves, so the
numbers equal dygraph's; everywhere else the clip object runs as usual.
"""

from __future__ import annotations

import paddle
from paddle.base.layer_helper import LayerHelper
from paddle.nn.clip import ClipGradBase, ClipGradByGlobalNorm, _squared_l2_norm

from . import _compat


def clip_gradients(grad_clip, params_grads):
    """``grad_clip(params_grads)``, working around the two mode gaps above."""
    if grad_clip is None:
        return params_grads
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

