"""Which implementation updates a parameter: decided here, and only here.

In the spirit of torch's ``_default_to_fused_or_foreach``: one function, :func:`choose`, fed
by the optimizer's ``kernel`` option, the parameter's settings for this step and one record of
what this process can run (:func:`capabilities`, asked of ``_kernel``), returns one of

* :data:`BUCKET` (dygraph): a member of a flat bucket, updated with the others by one fused
  call through the gradient table;
* :data:`STATIC_BATCH` (static programs): one fused multi-parameter op per batch of
  parameters with the same batch key (:func:`static_batch_worth_it` says when a batch is
  large enough);
* :data:`FUSED`: the fused kernel on this parameter alone;
* :data:`COMPOSED`: Paddle ops around :func:`paddle_momentum.rule.momentum_update`.

Every implementation gives the built-in's numbers; the choice is about speed and about what
each can take.
"""

from __future__ import annotations

import dataclasses

from . import _compat, _kernel
from ._settings import GLOBAL_NORM_CLIP, NORM_CLIP, ParamSettings, fused_gradient_ops

BUCKET = "bucket"
STATIC_BATCH = "static batch"
FUSED = "fused"
COMPOSED = "composed"

# A static program updates a batch of fewer parameters with one op each: under PIR a multi op
# brings three builtin.combine and two builtin.split ops (784-200-10 MLP, 4 parameters, 300
# steps: 1.01-1.02x the built-in's Executor step batched, 1.00x per parameter).
STATIC_BATCH_MIN = 7


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What this process can run now for ``rule`` (a ``_rules.Rule``): ``ops``, the fused
    kernel of the rule as it is now (built and checked; None: not, or not yet), the gradient
    table (built and checked against Paddle's accessors) and, where both are, whether the
    kernel's norm reductions equal Paddle's here (:attr:`norm_reductions`, the fused norm
    clips need it: checked at its first question, which a step without a norm clip never
    asks). The executors run ``rule`` and ``ops``."""

    rule: object
    ops: object
    table: bool

    @property
    def kernel(self) -> bool:
        return self.ops is not None

    @property
    def norm_reductions(self) -> bool:
        return self.table and _kernel.norm_reductions_exact(self.ops)


def capabilities(rule, kernel_option="auto", wait=False) -> Capabilities:
    """What this process can run for ``rule`` now under ``kernel_option`` (each part cached
    after its first answer: a build, a check; nothing for 'composed'). Asked once per step (a
    few us), and passed to :func:`choose`. ``wait``: a kernel not built yet is built now
    (else in the background, and the composed ops run until it is)."""
    if kernel_option == "composed":
        return Capabilities(rule, None, False)
    ops = rule.kernel(wait)
    return Capabilities(rule, ops, ops is not None and _kernel.gradient_table() is not None)


def choose(kernel_option: str, can: Capabilities, param, grad, settings: ParamSettings,
           repeated=False) -> str:
    """The implementation for ``param`` (with ``grad``: its gradient this step, or the
    parameter itself when not known yet) under ``kernel_option`` ('auto', 'fused',
    'composed') with what this process ``can`` run. ``repeated``: the parameter is listed
    more than once (the built-in updates it once per listing: never a bucket member)."""
    if kernel_option == "composed" or not _fused_supports(param, grad, settings):
        return COMPOSED
    if not can.kernel:
        return COMPOSED
    if not _compat.in_dygraph():
        if settings.dtype == "float64" and can.rule.static_float64_differs():
            return COMPOSED
        if settings.master_weight or _compat.is_tensor(settings.lr_scale):
            return FUSED
        return STATIC_BATCH
    if (repeated or not can.table or settings.uses_main_grad
            or _compat.is_tensor(settings.lr_scale) or param._numel() == 0
            or not param._is_initialized() or _compat.is_sparse(grad)):
        return FUSED
    gradient_ops = fused_gradient_ops(param, settings)
    if gradient_ops is None or (gradient_ops[0] in (GLOBAL_NORM_CLIP, NORM_CLIP)
                                and not can.norm_reductions):
        return FUSED
    return BUCKET


def bucket_key(kernel_option: str, can: Capabilities, param, settings: ParamSettings,
               grad=None, repeated=False):
    """The key of the flat bucket ``param`` belongs in (its structural settings: the batch key
    and the kinds of gradient ops the kernel does), or None where :func:`choose` does not
    make it a bucket member."""
    grad = param if grad is None else grad
    if choose(kernel_option, can, param, grad, settings, repeated) != BUCKET:
        return None
    return settings.batch_key() + fused_gradient_ops(param, settings)


def buckets_possible(kernel_option: str, can: Capabilities) -> bool:
    """Whether any parameter can be a bucket member now (dygraph, a fused kernel option, the
    kernel and the gradient table both there): else no bucket is built."""
    return _compat.in_dygraph() and kernel_option != "composed" and can.table


def static_batch_worth_it(size: int) -> bool:
    """Whether a static batch of ``size`` parameters gets one multi op (else one op each)."""
    return size >= STATIC_BATCH_MIN


def _fused_supports(param, grad, settings: ParamSettings) -> bool:
    """Whether the fused kernel takes this parameter: same-dtype gradient, on CPU, both
    contiguous (the kernel writes a strided view's elements as if they were contiguous);
    in a static program not a 0-d one (Paddle's PIR custom-op dtype inference aborts the
    process on a 0-d in-place output) and no dampening (its first-step flag lives in the
    program, which the kernel does not read); a torch.optim.SGD option on float32/float64
    parameters only (the kernel instantiates those loops for them alone)."""
    if settings.has_torch_option and _compat.is_low_precision(param.dtype):
        return False
    if _compat.in_dygraph():  # (asked for every parameter at a first step: kept cheap)
        return (grad.dtype == param.dtype and param.place.is_cpu_place()
                and param.is_contiguous() and grad.is_contiguous())
    return (_compat.dtype_name(grad.dtype) == _compat.dtype_name(param.dtype)
            and _compat.on_cpu(param) and len(param.shape) > 0
            and not settings.rule_options()["dampening"])
