"""Interchangeable implementations of one momentum step on one parameter (or flat buffer).

``composed`` takes ``(param, grad, velocity, master, lr, *, update=None, first_step=False,
**options)`` (``update``: the rule, a ``_rules.Rule``; None: the package's), the fused ones
the kernel's ``ops`` first (the rule's, from ``_rules.Rule.kernel``), where ``options`` are
the rule's keyword arguments (``_settings.ParamSettings.rule_options()``: every setting of
``_declarations.RULE_SETTINGS`` and ``l2_coeff``, None for no fused decay) and
``first_step`` says whether this is the parameter's first update (torch's dampening starts
there); each updates param, velocity and master (if not None) in place. They execute; what runs
where is decided in ``_dispatch``.

* ``composed``: Paddle tensor ops around :func:`paddle_momentum.rule.momentum_update`; the
  readable reference, runs anywhere (every device, dygraph and static).
* ``fused``: our C++ kernel (``csrc/momentum_kernel.cc``), one pass over memory, CPU.

``fused_multi`` and ``fused_table`` are ``fused`` for many parameters in one op.

Tests check fused == composed == built-in, bitwise.
"""

from __future__ import annotations

import paddle

from . import _compat
from ._boundary import NO_GRADIENT_OPS, kernel_attributes
from . import rule


def composed(param, grad, velocity, master, lr, *, update=None, first_step=False, **options):
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
    update = update or rule.momentum_update  # (looked up now: the rule as it is)
    new_param, new_velocity = update(
        current,
        _compat.cast(grad, compute_dtype),
        _compat.cast(velocity, compute_dtype),
        _compat.cast(lr, compute_dtype),
        round_result=rounding,
        first_step=first_step,
        **options,
    )
    if _compat.is_tensor(first_step):
        _compat.write_into(first_step, paddle.zeros_like(first_step))  # a static flag, spent
    _compat.write_into(velocity, _compat.cast(new_velocity, velocity.dtype))
    if master is not None:
        _compat.write_into(master, new_param)
    _compat.write_into(param, _compat.cast(new_param, param.dtype))


def fused(ops, param, grad, velocity, master, lr, *, first_step=False, **options):
    attributes = kernel_attributes(options, first_step=first_step)
    target = _compat.inplace_target
    if master is None:
        ops.pm_momentum(target(param), grad, target(velocity), lr, **attributes)
    else:
        ops.pm_momentum_master(target(param), grad, target(velocity), lr, target(master),
                               **attributes)


def fused_multi(ops, params, grads, velocities, masters, lr, *, first_step=False, **options):
    """``fused`` for many parameters sharing their settings, as one op (static programs).
    ``params``, ``velocities`` and ``masters`` (None: no master weights) may hold flat
    buffers of several parameters each: ``grads`` lists the gradients of the same elements in
    the same order."""
    attributes = kernel_attributes(options, first_step=first_step)
    target = _compat.inplace_target
    state = [[target(p) for p in params], grads, [target(v) for v in velocities], lr]
    if masters is None:
        ops.pm_momentum_multi(*state, **attributes)
    else:
        ops.pm_momentum_multi_master(*state, [target(m) for m in masters], **attributes)


def fused_table(ops, param_dtype, table, velocities, masters, lr, *,
                gradient_ops=NO_GRADIENT_OPS, first_step=False, **options):
    """``fused_multi`` (dygraph) with a filled gradient table (``_kernel.gradient_table``) in
    place of the parameter and gradient lists: the table holds their addresses and each
    member's learning-rate scale and clip flag (``lr`` is the optimizer's, unscaled), and
    ``param_dtype`` names the parameters' dtype. ``gradient_ops``
    (:class:`~paddle_momentum._boundary.GradientOps`) is what the built-in does to each
    gradient first."""
    table_call(ops, param_dtype, table, velocities, masters, lr,
               kernel_attributes(options, gradient_ops, first_step))


def table_call(ops, param_dtype, table, velocities, masters, lr, attributes):
    """:func:`fused_table` with its kernel attributes made already
    (``_boundary.kernel_attributes``: a step keeps its group's while they hold)."""
    if masters is None:
        ops.pm_momentum_table(table, velocities, lr, param_dtype, **attributes)
    else:
        ops.pm_momentum_table_master(table, velocities, lr, masters, param_dtype, **attributes)


def squared_norms(ops, dtype, table):
    """The squared L2 norm of each gradient of a filled gradient table (of ``dtype``, float32
    or float64), as Paddle's ``squared_l2_norm`` computes it, bit for bit: a 1-D tensor."""
    norms = paddle.empty([table.shape[1]], dtype)
    ops.pm_squared_norms(table, norms)
    return norms
