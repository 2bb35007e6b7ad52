"""What updates a parameter: decided here, and only here.

In the spirit of torch's ``_default_to_fused_or_foreach``: the optimizer's ``kernel`` option,
a parameter's settings for this step and one record of what this process can run
(:func:`capabilities`, asked of ``_kernel``) decide. Two kinds of decision:

* **Memory** (dygraph): :func:`bucket_member` says whether a parameter's tensors can live in a
  flat bucket (``_flat``): dense, contiguous, on the CPU, listed once. Decided when a bucket
  is built; the gradient table checks at every step that it still holds.
* **This step**: a bucket's call updates a member when :func:`member_joins` (its own
  settings: a plain learning-rate scale, no ``main_grad``, a decay the kernel does) and
  :func:`group_lets_join` (its group's: the clip's kind and values, the group's decay, the
  torch options) both say so; the bucket evaluates them when their inputs change, not at
  every step. Every other parameter with a gradient is a unit, and :func:`choose` returns
  what runs it: :data:`FUSED` (the fused kernel on it alone: what a bucket member the call
  skips this step runs too), :data:`COMPOSED` (Paddle ops around the rule), or in a static
  program :data:`STATIC_BATCH` (one fused multi-parameter op per batch of parameters with the
  same batch key; :func:`static_batch_member` says when a batch is too small).

The executors run what they are given: an :class:`Implementation`'s ``run``.
Every implementation gives the built-in's numbers; the choice is about speed and about what
each can take.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from . import _clip, _compat, _kernel, implementations
from ._settings import (GLOBAL_NORM_CLIP, NORM_CLIP, VALUE_CLIP, GroupSettings, ParamSettings,
                        clip_kind, fused_decay_terms, torch_option_on)


@dataclasses.dataclass(frozen=True)
class Implementation:
    """What updates one parameter: ``run(can, param, grad, velocity, master, lr, *,
    first_step, **options)`` (``can``: :class:`Capabilities`; ``options``: the rule's keyword
    arguments). ``batched``: a static program collects the parameter into a batch (one op
    for many, :data:`STATIC_BATCH`) and runs ``run`` only for a batch too small."""

    name: str
    run: Callable
    batched: bool = False


def _run_fused(can, *tensors, **options):
    implementations.fused(can.ops, *tensors, **options)


def _run_composed(can, *tensors, **options):
    implementations.composed(*tensors, update=can.rule, **options)


FUSED = Implementation("fused", _run_fused)
COMPOSED = Implementation("composed", _run_composed)
STATIC_BATCH = Implementation("static batch", _run_fused, batched=True)

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


def choose(kernel_option: str, can: Capabilities, param, grad,
           settings: ParamSettings) -> Implementation:
    """What updates ``param`` (a unit: not in a bucket's call this step), whose gradient this
    step is ``grad``, under ``kernel_option`` ('auto', 'fused', 'composed') with what this
    process ``can`` run."""
    if kernel_option == "composed" or not can.kernel or not _fused_supports(param, grad,
                                                                             settings):
        return COMPOSED
    if _compat.in_dygraph():
        return FUSED
    if settings.dtype == "float64" and can.rule.static_float64_differs():
        return COMPOSED
    if settings.master_weight or _compat.is_tensor(settings.lr_scale):
        return FUSED
    return STATIC_BATCH


def buckets_possible(kernel_option: str, can: Capabilities) -> bool:
    """Whether any parameter can be a bucket member now (dygraph, a fused kernel option, the
    kernel and the gradient table both there): else no bucket is built."""
    return _compat.in_dygraph() and kernel_option != "composed" and can.table


def bucket_member(param, grad, settings: ParamSettings, repeated: bool) -> bool:
    """Whether ``param`` (with ``grad``, its gradient now) can live in a flat bucket: the
    kernel takes it (same-dtype dense contiguous CPU tensors), it is initialized and not
    empty, and listed once (``repeated``: the built-in updates it once per listing)."""
    return (not repeated and param._numel() != 0 and param._is_initialized()
            and not _compat.is_sparse(grad) and _fused_supports(param, grad, settings))


def member_joins(settings: ParamSettings) -> bool:
    """Whether a bucket member's own settings let its bucket's call update it: a plain
    learning-rate scale (a Tensor one is the learning rate itself), its gradient ``.grad``
    (not ``main_grad``: the table reads ``.grad``) and, where the decay is its own, one the
    kernel does (:func:`_settings.fused_decay_terms`)."""
    return (not _compat.is_tensor(settings.lr_scale) and not settings.uses_main_grad
            and (settings.decay_from_group
                 or fused_decay_terms(settings.l2_coeff, settings.regularizer) is not None))


def group_lets_join(can: Capabilities, group: GroupSettings, dtype: str, zero_dim: bool,
                    clipped: bool, decay_from_group: bool) -> bool:
    """Whether a group's settings now let a bucket's call update a member of ``dtype``
    (``zero_dim``: a 0-d one; ``clipped``: the group's clip applies to it; ``decay_from_group``:
    its decay is the group's). The kernel does the clips by value, by norm (float32: Paddle's
    ``clip_by_norm`` has no other CPU kernel) and by global norm (float32 and float64, not
    0-d: the built-in multiplies those into a new gradient; not sharded), where its
    reductions equal Paddle's; the torch options on float32 and float64 only."""
    if _compat.is_low_precision(dtype) and torch_option_on(group.rule):
        return False
    if decay_from_group and fused_decay_terms(group.l2_coeff, group.regularizer) is None:
        return False
    if not clipped:
        return True
    kind = clip_kind(group.grad_clip)
    if kind == VALUE_CLIP:
        return clip_values_fusable(group.grad_clip)
    if kind == NORM_CLIP:
        return dtype == "float32" and can.norm_reductions
    if kind == GLOBAL_NORM_CLIP:
        return (dtype in ("float32", "float64") and not zero_dim and can.norm_reductions
                and not getattr(group.grad_clip, "should_comm_on_shard_dim", False))
    return kind is None  # (another clip: Paddle's own ops run it)


def clip_values_fusable(clip) -> bool:
    """The clip's values are plain numbers the kernel takes as doubles (a clip set by value
    may hold anything after construction: None, a Tensor, ...)."""
    return clip_kind(clip) != VALUE_CLIP or _clip.rule_clip_bounds(clip) is not None


def static_batch_member(size: int):
    """What updates each parameter of a static batch of ``size``: None (the batch gets one
    multi op) or, for a batch too small to repay it, :data:`FUSED` (one op each)."""
    return None if size >= STATIC_BATCH_MIN else FUSED


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

