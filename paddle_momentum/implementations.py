"""Interchangeable implementations of one momentum step on one parameter (or flat buffer).

Each has the same signature: ``(param, grad, velocity, master, lr, *, momentum, use_nesterov,
l2_coeff, rescale_grad)`` (``l2_coeff=None``: no fused decay) and updates param, velocity and
master (if not None) in place.

* ``composed``: Paddle tensor ops around :func:`paddle_momentum.rule.momentum_update`; the
  readable reference, runs anywhere (every device, dygraph and static).
* ``fused``: our C++ kernel (``csrc/momentum_kernel.cc``), one pass over memory, CPU.

``fused_multi`` and ``fused_table`` are ``fused`` for many parameters in one op.

``composed`` also takes the ``torch.optim.SGD`` options (``dampening``, ``maximize``,
``decoupled_weight_decay``); the optimizer uses it whenever one of them is set.

The optimizer picks one per parameter; tests check fused == composed == built-in, bitwise.
"""

from __future__ import annotations

import dataclasses
import struct

import paddle

from . import _compat, _kernel
from .rule import as_float32_attribute, momentum_update


def composed(param, grad, velocity, master, lr, *, momentum, use_nesterov, l2_coeff,
             rescale_grad, **torch_options):
    if grad.shape != param.shape:
        # ClipGradByGlobalNorm multiplies by a [1]-shaped factor: a 0-d gradient comes back
        # with shape [1]. The update must keep the parameter's shape.
        grad = grad.reshape(param.shape)
    rounding = None
    if master is not None:
        current = master
    elif _compat.is_low_precision(param.dtype):
        # No float16/bfloat16 arithmetic on CPU: compute in float32, round every result.
        current = _compat.cast(param, paddle.float32)
        rounding = _compat.round_through(param.dtype)
    else:
        current = param
    compute_dtype = current.dtype
    new_param, new_velocity = momentum_update(
        current,
        _compat.cast(grad, compute_dtype),
        _compat.cast(velocity, compute_dtype),
        _compat.cast(lr, compute_dtype),
        momentum=momentum,
        use_nesterov=use_nesterov,
        l2_coeff=l2_coeff,
        rescale_grad=rescale_grad,
        round_result=rounding,
        **torch_options,
    )
    first_step = torch_options.get("first_step")
    if _compat.is_tensor(first_step):
        _compat.write_into(first_step, paddle.zeros_like(first_step))  # a static flag, spent
    _compat.write_into(velocity, _compat.cast(new_velocity, velocity.dtype))
    if master is not None:
        _compat.write_into(master, new_param)
    _compat.write_into(param, _compat.cast(new_param, param.dtype))


@dataclasses.dataclass(frozen=True)
class GradientOps:
    """What the built-in does to a bucket member's gradient before its kernel, with this
    step's values (None: not done): ``ClipGradByValue`` (``clip_min``, ``clip_max``), a global
    norm's factor (``scale``, written back into the gradient), ``ClipGradByNorm``
    (``max_norm``: each gradient scaled by its own norm), and the ``L1Decay`` term (``l1``).
    The clips apply to the members whose table row says so (their ``need_clip``)."""

    clip_min: float | None = None
    clip_max: float | None = None
    scale: float | None = None
    max_norm: float | None = None
    l1: float | None = None


NO_GRADIENT_OPS = GradientOps()


def _bits(value) -> int:
    """A double's 64 bits as an int64 attribute (0 for None): exact, NaN signs kept, no text."""
    return 0 if value is None else struct.unpack("<q", struct.pack("<d", value))[0]


def _kernel_attributes(momentum, use_nesterov, l2_coeff, rescale_grad, ops=NO_GRADIENT_OPS):
    """The kernel's attributes, in its order (``PM_ATTRIBUTES`` in csrc/momentum_kernel.cc, the
    only other list of them)."""
    return (as_float32_attribute(momentum), as_float32_attribute(l2_coeff or 0.0),
            l2_coeff is not None, as_float32_attribute(rescale_grad), bool(use_nesterov),
            ops.clip_min is not None, _bits(ops.clip_min), _bits(ops.clip_max),
            ops.l1 is not None, _bits(ops.l1), ops.scale is not None, _bits(ops.scale),
            ops.max_norm is not None, _bits(ops.max_norm))


def fused(param, grad, velocity, master, lr, *, momentum, use_nesterov, l2_coeff,
          rescale_grad):
    ops = _kernel.load()
    scalars = _kernel_attributes(momentum, use_nesterov, l2_coeff, rescale_grad)
    target = _compat.inplace_target
    if master is None:
        ops.pm_momentum(target(param), grad, target(velocity), lr, *scalars)
    else:
        ops.pm_momentum_master(target(param), grad, target(velocity), lr, target(master),
                               *scalars)


def fused_multi(params, grads, velocities, masters, lr, *, momentum, use_nesterov, l2_coeff,
                rescale_grad):
    """``fused`` for many parameters sharing their settings, as one op. ``params``,
    ``velocities`` and ``masters`` (None: no master weights) may hold flat buffers of several
    parameters each: ``grads`` lists the gradients of the same elements in the same order."""
    scalars = _kernel_attributes(momentum, use_nesterov, l2_coeff, rescale_grad)
    target = _compat.inplace_target
    ops = _kernel.load()
    state = [[target(p) for p in params], grads, [target(v) for v in velocities], lr]
    if masters is None:
        ops.pm_momentum_multi(*state, *scalars)
    else:
        ops.pm_momentum_multi_master(*state, [target(m) for m in masters], *scalars)


def fused_table(param_dtype, table, velocities, masters, lr, *, momentum, use_nesterov,
                l2_coeff, rescale_grad, gradient_ops=NO_GRADIENT_OPS):
    """``fused_multi`` (dygraph) with a filled gradient table (``_kernel.gradient_table``) in
    place of the parameter and gradient lists: the table holds their addresses and each
    member's learning-rate scale and clip flag (``lr`` is the optimizer's, unscaled), and
    ``param_dtype`` names the parameters' dtype. ``gradient_ops`` (:class:`GradientOps`) is
    what the built-in does to each gradient first."""
    scalars = _kernel_attributes(momentum, use_nesterov, l2_coeff, rescale_grad, gradient_ops)
    ops = _kernel.load()
    if masters is None:
        ops.pm_momentum_table(table, velocities, lr, param_dtype, *scalars)
    else:
        ops.pm_momentum_table_master(table, velocities, lr, masters, param_dtype, *scalars)


def squared_norms(dtype, table):
    """The squared L2 norm of each gradient of a filled gradient table (of ``dtype``, float32
    or float64), as Paddle's ``squared_l2_norm`` computes it, bit for bit: a 1-D tensor."""
    norms = paddle.empty([table.shape[1]], dtype)
    _kernel.load().pm_squared_norms(table, norms)
    return norms


def fused_supports(param, grad) -> bool:
    """Whether the fused kernel takes this parameter: same-dtype gradient, on CPU, both
    contiguous (the kernel writes a strided view's elements as if they were contiguous);
    in a static program not a 0-d one (Paddle's PIR custom-op dtype inference aborts the
    process on a 0-d in-place output)."""
    if _compat.in_dygraph():  # (asked for every parameter at a first step: kept cheap)
        return (grad.dtype == param.dtype and param.place.is_cpu_place()
                and param.is_contiguous() and grad.is_contiguous())
    return (_compat.dtype_name(grad.dtype) == _compat.dtype_name(param.dtype)
            and _compat.on_cpu(param) and len(param.shape) > 0)

