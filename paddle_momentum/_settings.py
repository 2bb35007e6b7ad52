"""Each parameter's update settings, derived in one place, from what the built-in reads.

The built-in ``Momentum.step()`` reads, every step: the optimizer's ``_grad_clip``; per group
the dict's ``momentum``, ``use_nesterov``, ``rescale_grad`` and ``grad_clip``; per parameter
``stop_gradient``, ``main_grad`` (without groups), ``optimize_attr['learning_rate']`` (the
learning-rate scale) and ``regularizer`` (which routes weight decay), and the parameter's
dtype, place, layout and size through its kernel. :func:`derive` turns exactly these into a
:class:`ParamSettings`; the optimizer calls it at step time for every parameter it updates one
by one, and a flat bucket (``_flat``) checks every step, cheaply, that what its members were
derived from has not changed (:func:`attribute_objects`).

Parameter groups: the built-in writes a group's ``learning_rate`` and ``weight_decay`` into
its parameters' ``optimize_attr`` and ``regularizer`` at construction and reads those at step
time. We never modify the parameters; instead a parameter's own attribute counts once it is no
longer the object it was at construction (:class:`ConstructionAttributes`), which is when the
built-in would read the user's value too. Until then the group's setting holds.
"""

from __future__ import annotations

import dataclasses

from paddle.regularizer import L2Decay

from . import _compat
from . import _validation as check

_NOT_SET = None  # what attribute_objects reports for an attribute a parameter does not have


def attribute_objects(param):
    """``(lr scale object, regularizer, main_grad)`` as they stand on ``param`` (None where
    absent): the objects a derivation reads from the parameter itself. Identity with an
    earlier snapshot means nothing the built-in reads from the parameter's attributes changed
    (the snapshot holds references, so no other object can take an address in it)."""
    optimize_attr = getattr(param, "optimize_attr", None)
    lr_scale = optimize_attr.get("learning_rate") if isinstance(optimize_attr, dict) else None
    return (lr_scale, getattr(param, "regularizer", None), getattr(param, "main_grad", None))


def split_weight_decay(decay):
    """``(fused L2 coefficient or None, other regularizer or None)`` for one decay setting.

    A float or an ``L2Decay`` is fused into the update (coefficient rounded to float32 there);
    any other regularizer (``L1Decay``, custom) is applied to the gradient beforehand.
    """
    if decay is None:
        return None, None
    if isinstance(decay, float):
        return decay, None
    if isinstance(decay, L2Decay):
        return decay._coeff, None
    return None, decay


@dataclasses.dataclass(frozen=True)
class GroupSettings:
    """What a group (or the optimizer, without groups) contributes to its members' settings.

    ``lr_scale`` is None without groups (each parameter's ``optimize_attr`` counts);
    ``l2_coeff`` is the fused decay and ``regularizer`` the non-fused one a member without a
    regularizer of its own gets; ``group_regularizer`` is what the built-in would have written
    into a grouped member's ``regularizer`` at construction (None without groups).
    """

    momentum: float
    use_nesterov: bool
    rescale_grad: float
    grad_clip: object
    lr_scale: float | None
    l2_coeff: float | None
    regularizer: object
    group_regularizer: object = None

    def structure(self):
        """What flat buckets are built from (the scalars above it are read every step)."""
        return (self.grad_clip, self.lr_scale, self.l2_coeff, self.regularizer,
                self.group_regularizer)


def group_settings(group, construction, momentum, use_nesterov, rescale_grad, grad_clip,
                   optimizer_decay):
    """:class:`GroupSettings` of ``group`` (a normalized group dict, or None without groups),
    validated: a value a user put into a group dict (or an optimizer attribute) after
    construction is checked here, with the error the constructor would have raised.

    The other arguments are the optimizer's current ``_momentum``, ``_use_nesterov``,
    ``_rescale_grad`` and ``_grad_clip`` (which the built-in reads at step time without
    groups) and its ``(fused L2, other regularizer)``. A group's ``momentum``,
    ``use_nesterov``, ``rescale_grad`` and ``grad_clip`` are read now; its ``learning_rate``
    and ``weight_decay`` as they were at construction (``construction``), because that is
    when the built-in copies them into the parameters.
    """
    if group is None:
        return GroupSettings(check.check_momentum(momentum), check.check_bool(
            use_nesterov, "use_nesterov"), check.check_rescale_grad(rescale_grad),
            check.check_grad_clip(grad_clip), None, *optimizer_decay)
    where = "parameter group"
    lr_scale, weight_decay = construction.group_values(group)
    fused, other = split_weight_decay(weight_decay)
    return GroupSettings(
        check.check_momentum(group["momentum"], f"{where} 'momentum'"),
        check.check_bool(group["use_nesterov"], f"{where} 'use_nesterov'"),
        check.check_rescale_grad(group["rescale_grad"], f"{where} 'rescale_grad'"),
        check.check_grad_clip(group["grad_clip"], f"{where} 'grad_clip'"),
        lr_scale, fused, optimizer_decay[1], other)


class ConstructionAttributes:
    """What parameter groups were constructed with: each group's ``learning_rate`` and
    ``weight_decay``, and the lr-scale and regularizer objects its parameters had."""

    def __init__(self):
        self._objects = {}
        self._groups = {}

    def add(self, group):
        """Record a (normalized) group as it is now."""
        self._groups[id(group)] = (group, group["learning_rate"], group["weight_decay"])
        self._objects.update({id(p): (p,) + attribute_objects(p)[:2] for p in group["params"]})

    def group_values(self, group):
        """``(learning_rate, weight_decay)`` of ``group`` at construction."""
        return self._groups[id(group)][1:]

    def changed(self, param, lr_scale, regularizer):
        """``(lr scale changed, regularizer changed)`` since construction."""
        entry = self._objects.get(id(param))
        if entry is None or entry[0] is not param:
            return True, True
        return lr_scale is not entry[1], regularizer is not entry[2]


@dataclasses.dataclass(frozen=True)
class ParamSettings:
    """Everything one parameter's update depends on, besides its tensors."""

    lr_scale: float
    l2_coeff: float | None  # fused into the update; None: no fused decay
    regularizer: object  # non-fused (L1, custom), added to the gradient; None: none
    grad_clip: object
    momentum: float
    use_nesterov: bool
    rescale_grad: float
    master_weight: bool
    dtype: str
    uses_main_grad: bool  # the gradient is ``param.main_grad`` (set, and no groups)

    def batch_key(self):
        """Parameters of one group (or of a static program) with equal keys can share one
        fused multi-parameter call, dygraph buckets and static batches alike: one dtype, one
        learning-rate tensor, one fused decay. (``momentum``, ``use_nesterov`` and
        ``rescale_grad`` are the group's, read at every step.)"""
        return (self.dtype, self.master_weight, self.l2_coeff, self.lr_scale)

    def rule_options(self):
        """The keyword arguments every implementation (``implementations``) takes."""
        return dict(momentum=self.momentum, use_nesterov=self.use_nesterov,
                    l2_coeff=self.l2_coeff, rescale_grad=self.rescale_grad)

    @property
    def gradient_untouched(self) -> bool:
        """No clip and no non-fused regularizer act on the gradient before the update."""
        return self.grad_clip is None and self.regularizer is None


def derive(param, group: GroupSettings, grouped: bool, construction, multi_precision,
           objects=None):
    """``param``'s :class:`ParamSettings` as the built-in would use them now. ``objects`` is
    ``attribute_objects(param)`` when the caller already has it."""
    lr_object, own_regularizer, main_grad = objects or attribute_objects(param)
    if grouped:
        lr_changed, regularizer_changed = construction.changed(param, lr_object,
                                                               own_regularizer)
        lr_scale = (_param_lr_scale(param, lr_object) if lr_changed else group.lr_scale)
        if not regularizer_changed:
            own_regularizer = group.group_regularizer
    else:
        lr_scale = _param_lr_scale(param, lr_object)
    if isinstance(own_regularizer, L2Decay):
        l2_coeff, regularizer = own_regularizer._coeff, None
    elif own_regularizer is not None:
        l2_coeff, regularizer = None, own_regularizer
    else:
        l2_coeff, regularizer = group.l2_coeff, group.regularizer
    dtype = _compat.dtype_name(param.dtype)
    return ParamSettings(
        lr_scale, l2_coeff, regularizer, group.grad_clip, group.momentum, group.use_nesterov,
        group.rescale_grad, bool(multi_precision) and _compat.is_low_precision(param.dtype),
        dtype, not grouped and main_grad is not None)


def _param_lr_scale(param, lr_object):
    if lr_object is None:
        return 1.0
    if _compat.is_tensor(lr_object):  # a static-graph Variable/Value: used as the lr itself
        return lr_object
    return check.check_param_lr_scale(lr_object, f"{param.name}.optimize_attr['learning_rate']")
