"""Each parameter's update settings, declared and derived in one place, from what the
built-in reads.

Every per-group scalar of the rule is declared once, in ``_declarations.RULE_SETTINGS``: the
constructor's checks and defaults, the group keys, the step-time reading here and the kernel's
attributes all come from those declarations.

The built-in ``Momentum.step()`` reads, every step: the optimizer's ``_grad_clip``,
``regularization`` and ``_multi_precision``; without groups its ``_momentum``,
``_use_nesterov``, ``_rescale_grad`` (ours: ``_<name>`` of every declared setting),
``_regularization_method`` and ``_regularization_coeff``, with groups the same keys of each
group dict; per parameter
``stop_gradient``, ``main_grad`` (``step()`` without groups), ``need_clip`` (through the
clip), ``optimize_attr['learning_rate']`` (the learning-rate scale) and ``regularizer``
(which routes weight decay), its velocity and master weight in the optimizer's dicts, and
its dtype, place, layout and size through its kernel. :func:`group_settings` and
:func:`derive` turn exactly these into a :class:`ParamSettings`; the optimizer derives them
at step time for every parameter it updates on its own (``_reading.Derivations`` redoes it
only when an input changed), and a flat bucket (``_flat``) checks every step, cheaply, that what
its members were derived from has not changed (:func:`attribute_objects`), and derives the
settings of those whose inputs did.

Parameter groups: the built-in writes a group's ``learning_rate`` and ``weight_decay`` into
its parameters' ``optimize_attr`` and ``regularizer`` at construction and reads those at step
time. We never modify the parameters; instead a parameter's own attribute counts once it is no
longer the object it was at construction (:class:`ConstructionAttributes`), which is when the
built-in would read the user's value too. Until then the group's setting holds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from paddle.nn.clip import ClipGradByGlobalNorm, ClipGradByNorm, ClipGradByValue
from paddle.regularizer import L1Decay, L2Decay

from . import _compat
from . import _validation as check
from ._declarations import (RULE_SETTING_NAMES, RULE_SETTINGS, check_rule_values,
                            torch_option_on)

def attribute_objects(param):
    """``(lr scale object, regularizer, main_grad, need_clip)`` as they stand on ``param``
    (None where absent): the objects a derivation (and a clip) reads from the parameter
    itself. Identity with an earlier snapshot means nothing the built-in reads from the
    parameter's attributes changed (the snapshot holds references, so no other object can
    take an address in it)."""
    optimize_attr = getattr(param, "optimize_attr", None)
    lr_scale = optimize_attr.get("learning_rate") if isinstance(optimize_attr, dict) else None
    return (lr_scale, getattr(param, "regularizer", None), getattr(param, "main_grad", None),
            getattr(param, "need_clip", None))


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


def fused_decay(method, coeff, where):
    """The fused L2 coefficient that the built-in's ``regularization_method`` and
    ``regularization_coeff`` settings stand for (None: no fused decay)."""
    if method == "l2_decay":
        return check.check_real(coeff, f"{where}regularization_coeff")
    if method in ("", None):
        return None
    raise ValueError(f"{where}regularization_method must be 'l2_decay' or '', got {method!r}")


def checked_rule_values(given, group):
    """``(value, ...)`` of every :data:`RULE_SETTINGS` entry, in their order, from ``given``
    (their objects as :meth:`Setting.given` reads them), checked."""
    values = {s.name: s.checked(value, group) for s, value in zip(RULE_SETTINGS, given)}
    check_rule_values(values)
    return tuple(values.values())


@dataclasses.dataclass(frozen=True)
class GroupSettings:
    """What a group (or the optimizer, without groups) contributes to its members' settings:
    ``rule`` the values of :data:`RULE_SETTINGS` (in their order), ``l2_coeff`` the fused
    decay and ``regularizer`` the non-fused one that a member without a regularizer of its
    own gets."""

    rule: tuple
    grad_clip: object
    l2_coeff: float | None
    regularizer: object
    multi_precision: bool
    rescale_grad_on_cpu: bool  # the optimizer's opt-in (see ParamSettings.rule_options)

    def value(self, name):
        """The value of the rule setting ``name``."""
        return self.rule[RULE_SETTING_NAMES.index(name)]

    def rule_options(self):
        """The rule's keyword arguments for this group's dense CPU parameters (a bucket's call:
        the decay is each member's, in its row; see ``ParamSettings.rule_options``)."""
        return _rule_options(self.rule, None, self.rescale_grad_on_cpu)


# How many of group_inputs' objects GroupSettings keeps as objects (the clip and the non-fused
# regularizer, whose values are read where they are used); the others are values.
GROUP_OBJECTS_KEPT = 2


def group_inputs(group, optimizer) -> tuple:
    """The objects a group's settings are made of, read now as the built-in reads them at step
    time (unchecked): first the :data:`GROUP_OBJECTS_KEPT` kept as objects, the clip
    (``_grad_clip``, or the group's key) and the optimizer's ``regularization`` (its
    non-fused decay); then ``_regularization_method`` and ``_regularization_coeff`` (or the
    group's keys), every :data:`RULE_SETTINGS` entry (:meth:`Setting.given`), the
    optimizer's ``_multi_precision`` and ``_rescale_grad_on_cpu``."""
    if group is None:
        own = (optimizer._grad_clip, optimizer._regularization_method,
               optimizer._regularization_coeff)
    else:
        own = (group["grad_clip"], group["regularization_method"], group["regularization_coeff"])
    return (own[0], optimizer.regularization, *own[1:],
            *[setting.given(group, optimizer) for setting in RULE_SETTINGS],
            optimizer._multi_precision, optimizer._rescale_grad_on_cpu)


def group_settings(group, inputs) -> GroupSettings:
    """:class:`GroupSettings` of ``group`` (a normalized group dict, or None without groups)
    from its :func:`group_inputs`, validated: a value put into a group dict or an optimizer
    attribute after construction is checked here, with the error the constructor would
    have raised."""
    where = "optimizer._" if group is None else "parameter group "
    clip, regularizer, method, coeff, *rest = inputs
    *rule_given, multi_precision, rescale_grad_on_cpu = rest
    clip = check.check_grad_clip(clip, "grad_clip" if group is None else f"{where}'grad_clip'")
    return GroupSettings(checked_rule_values(rule_given, group), clip,
                         fused_decay(method, coeff, where), regularizer, bool(multi_precision),
                         check.check_bool(rescale_grad_on_cpu, "optimizer._rescale_grad_on_cpu"))


class ConstructionAttributes:
    """What the built-in writes onto grouped parameters at construction, and what they held.

    The built-in sets a grouped parameter's ``optimize_attr['learning_rate']`` to its group's
    ``learning_rate`` and its ``regularizer`` to the group's non-fused decay (None for a
    float or L2 one), and from then on reads those attributes. We write nothing; we record,
    per parameter, what it would have been given and the objects it held, so that
    :func:`derive` takes the parameter's own attribute once it is another object."""

    def __init__(self):
        self._params = {}

    def add(self, group):
        """Record a (normalized) group's parameters as they are now."""
        _, group_regularizer = split_weight_decay(group["weight_decay"])
        for param in group["params"]:
            lr_object, regularizer = attribute_objects(param)[:2]
            self._params[id(param)] = (param, lr_object, regularizer, group["learning_rate"],
                                       group_regularizer)

    def given(self, param, lr_object, regularizer):
        """``(lr scale, regularizer)`` the built-in would read from grouped ``param`` whose
        attributes are now ``lr_object`` and ``regularizer``; None for either one that the
        built-in reads from the parameter itself (changed since, or never written)."""
        entry = self._params.get(id(param))
        if entry is None or entry[0] is not param:
            return None, None
        return ((entry[3] if lr_object is entry[1] else None),
                (entry[4] if regularizer is entry[2] else _OWN))


_OWN = object()  # "the parameter's own regularizer" (None is a regularizer value)


def _rule_options(rule, l2_coeff, rescale):
    """The rule's keyword arguments: the values of :data:`RULE_SETTINGS` (``rule``, in their
    order), ``l2_coeff``; ``rescale_grad`` 1.0 unless ``rescale``."""
    options = dict(zip(RULE_SETTING_NAMES, rule), l2_coeff=l2_coeff)
    if not rescale:
        options["rescale_grad"] = 1.0
    return options


@dataclasses.dataclass(frozen=True)
class ParamSettings:
    """Everything one parameter's update depends on, besides its tensors."""

    lr_scale: float
    l2_coeff: float | None  # fused into the update; None: no fused decay
    regularizer: object  # non-fused (L1, custom), added to the gradient; None: none
    grad_clip: object
    rule: tuple  # the values of RULE_SETTINGS, in their order
    master_weight: bool
    dtype: str
    uses_main_grad: bool  # the gradient is ``param.main_grad`` (set, and no groups)
    rescale_dense: bool  # rescale_grad applies to a dense gradient (not on CPU, or opted in)
    decay_from_group: bool  # l2_coeff and regularizer are the group's (none of its own)
    decay_from_attribute: bool  # they come from the parameter's ``regularizer`` attribute

    def batch_key(self):
        """Parameters of a static program with equal keys share one fused multi-parameter
        op: one dtype, master weights or not, one fused decay. (``momentum``,
        ``use_nesterov`` and ``rescale_grad`` are the program's; the batch adds the
        learning-rate scale to the key.)"""
        return (self.dtype, self.master_weight, self.l2_coeff)

    def rule_options(self, sparse=False):
        """The keyword arguments every implementation (``implementations``) takes: the
        :data:`RULE_SETTINGS` values and the fused L2 coefficient. ``rescale_grad`` is 1.0
        for a dense gradient on CPU (``sparse`` False), as the built-in's dense CPU kernel
        ignores it (its sparse and GPU kernels apply it), unless the optimizer was made with
        ``rescale_grad_on_cpu=True``."""
        return _rule_options(self.rule, self.l2_coeff, self.rescale_dense or sparse)

    @property
    def has_torch_option(self) -> bool:
        """A torch.optim.SGD option (a keyword-only setting) is on."""
        return torch_option_on(self.rule)



# The clip a bucket's kernel call does to its members with ``need_clip`` (the group's clip,
# by kind; its values are read at every step).
VALUE_CLIP = "value"  # ClipGradByValue
NORM_CLIP = "norm"  # ClipGradByNorm: each gradient scaled by its own norm
GLOBAL_NORM_CLIP = "global-norm"  # ClipGradByGlobalNorm: the group's factor
OTHER_CLIP = "other"  # a clip the kernel does not do (Paddle's ops run it)


def clip_kind(clip):
    """The kind of ``clip`` as the kernel sees it (None: no clip)."""
    if clip is None:
        return None
    return {ClipGradByValue: VALUE_CLIP, ClipGradByNorm: NORM_CLIP,
            ClipGradByGlobalNorm: GLOBAL_NORM_CLIP}.get(type(clip), OTHER_CLIP)


def fused_decay_terms(l2_coeff, regularizer):
    """``(L2 coefficient or None, L1 coefficient or None)``: a decay as the kernel takes it
    (``l2_coeff`` fused into the rule; an ``L1Decay`` of a plain coefficient added to the
    gradient), or None when ``regularizer`` is another one (a custom regularizer, an
    ``L1Decay`` of a Tensor coefficient: its own ops run it; an L2 coefficient that is not a
    plain number, a Tensor, whose value a bucket's row would not follow)."""
    if l2_coeff is not None and not exact_double(l2_coeff):
        return None
    if regularizer is None:
        return l2_coeff, None
    if type(regularizer) is not L1Decay or not exact_double(regularizer._coeff):
        return None
    return l2_coeff, float(regularizer._coeff)


def exact_double(value) -> bool:
    """``value`` is a plain number a double holds exactly, as the kernel takes it (Paddle's
    ops take an int as an int64: beyond 2**53 only they round it right)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                      np.floating)):
        return False
    return not isinstance(value, (int, np.integer)) or abs(int(value)) <= 2 ** 53


def derive(param, group: GroupSettings, grouped: bool, construction):
    """``param``'s :class:`ParamSettings` as the built-in would use them now."""
    lr_object, regularizer, main_grad, _ = attribute_objects(param)
    attribute, lr_scale = regularizer, None
    if grouped:
        lr_scale, given = construction.given(param, lr_object, regularizer)
        if given is not _OWN:
            regularizer = given
    if lr_scale is None:
        lr_scale = _param_lr_scale(param, lr_object)
    from_group = regularizer is None
    from_attribute = regularizer is not None and regularizer is attribute
    if isinstance(regularizer, L2Decay):
        l2_coeff, regularizer = regularizer._coeff, None
    elif from_group:
        l2_coeff, regularizer = group.l2_coeff, group.regularizer
    else:
        l2_coeff = None
    dtype = _compat.dtype_name(param.dtype)
    return ParamSettings(
        lr_scale, l2_coeff, regularizer, group.grad_clip, group.rule,
        group.multi_precision and _compat.is_low_precision(param.dtype),
        dtype, not grouped and main_grad is not None and _compat.STEP_READS_MAIN_GRAD,
        group.rescale_grad_on_cpu or not _compat.on_cpu(param), from_group, from_attribute)


def _param_lr_scale(param, lr_object):
    """A parameter's own learning-rate scale, as the built-in takes it: absent is 1.0; a
    tensor is the learning rate itself (static Variable/Value, or a dygraph Tensor)."""
    where = f"{param.name}.optimize_attr['learning_rate']"
    if lr_object is None:
        if "learning_rate" in (getattr(param, "optimize_attr", None) or {}):
            raise TypeError(f"{where} must be a number or a Tensor, got None")
        return 1.0
    if _compat.is_tensor(lr_object):
        return lr_object
    if isinstance(lr_object, str):  # the built-in fails multiplying the lr tensor by it
        raise ValueError(f"{where} must be a number or a Tensor, got {lr_object!r}")
    return check.check_real(lr_object, where, allow_bool=True)
