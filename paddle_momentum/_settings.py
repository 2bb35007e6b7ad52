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
at step time for every parameter it updates on its own (:class:`Derivations` redoes it only
when an input changed), and a flat bucket (``_flat``) checks every step, cheaply, that what
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
import math
import operator
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


def read_rule_values(group, optimizer):
    """``(value, ...)`` of every :data:`RULE_SETTINGS` entry now, in their order, checked."""
    values = {s.name: s.read(group, optimizer) for s in RULE_SETTINGS}
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


def group_settings(group, optimizer):
    """:class:`GroupSettings` of ``group`` (a normalized group dict, or None without groups)
    now, validated: a value put into a group dict or an optimizer attribute after
    construction is checked here, with the error the constructor would have raised.

    Read as the built-in reads them at step time: the optimizer's ``regularization`` (its
    non-fused decay), ``_grad_clip`` and ``_multi_precision``; every :data:`RULE_SETTINGS`
    entry, ``_regularization_method`` and ``_regularization_coeff`` from the optimizer
    without groups, from the group dict's keys with them.
    """
    where = "optimizer._" if group is None else "parameter group "
    if group is None:
        clip = check.check_grad_clip(optimizer._grad_clip)
        method, coeff = optimizer._regularization_method, optimizer._regularization_coeff
    else:
        clip = check.check_grad_clip(group["grad_clip"], f"{where}'grad_clip'")
        method, coeff = group["regularization_method"], group["regularization_coeff"]
    return GroupSettings(read_rule_values(group, optimizer), clip,
                         fused_decay(method, coeff, where), optimizer.regularization,
                         bool(optimizer._multi_precision),
                         check.check_bool(optimizer._rescale_grad_on_cpu,
                                          "optimizer._rescale_grad_on_cpu"))


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


def exactly(value):
    """``value`` in a form whose ``==`` tells apart what the update's arithmetic does: a
    number's type (``np.float16(0.1) == 0.1`` under numpy's promotion rules, though the
    built-in then computes with 0.0999755859375) and a zero's sign (``-0.0 == 0.0``, though
    ``v * -0.0`` and ``v * 0.0`` differ in theirs); a tuple element by element; any other
    object (a Tensor coefficient) by identity."""
    if isinstance(value, tuple):
        return tuple(map(exactly, value))
    if isinstance(value, (float, np.floating)):
        return type(value), value, math.copysign(1.0, value)
    if value is None or isinstance(value, (bool, int, str, np.generic)):
        return type(value), value
    return type(value), _Same(value)  # (a Tensor, say: the same object, not an equal one)


class _Same:
    """An object compared by identity (kept, so that no other object takes its id)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Same) and other.value is self.value

    def __hash__(self):
        return id(self.value)


class Derivations:
    """:func:`derive`, done again for a parameter only when one of its inputs changed.

    The inputs (the group's settings, the parameter's attribute objects, dtype, and its own
    regularizer's coefficient) are compared with the previous step's: objects by identity (the
    memo holds them, so no other object can take their address), the rest by value. A group's
    settings are compared by value once per step; when equal, the previous object is kept,
    so that its members' identity checks hold. (Deriving 2000 parameters' settings cost
    about 8 ms a step; checking them about 1 ms.)"""

    # Ungrouped parameters that share their inputs (the same group settings, lr-scale and
    # regularizer objects, main_grad presence, dtype) share one derivation: a first step over
    # 20,000 parameters derives once, not 20,000 times. Bounded: cleared when this full.
    SHARED_MAX = 1024

    def __init__(self):
        self._groups = {}
        self._params = {}
        self._shared = {}

    def group(self, key, settings: GroupSettings) -> GroupSettings:
        """``settings`` of group ``key``, or the equal object of the previous step (its
        numbers equal in :func:`exactly`'s sense: a momentum of -0.0 is not one of 0.0)."""
        previous = self._groups.get(key)
        if (previous == settings and exactly(previous.rule) == exactly(settings.rule)
                and exactly(previous.l2_coeff) == exactly(settings.l2_coeff)):
            return previous
        self._groups[key] = settings
        return settings

    def settings(self, param, group, grouped, construction) -> ParamSettings:
        objects = attribute_objects(param)[:3]  # (need_clip is read by the clip, not here)
        coeff = getattr(objects[1], "_coeff", None)
        inputs = (grouped, param.dtype, exactly(coeff))
        entry = self._params.get(id(param))
        if (entry is not None and entry[0] is param and entry[1] is group
                and entry[2] == inputs and all(map(operator.is_, entry[3], objects))):
            return entry[4]
        settings = None
        shareable = (not grouped and objects[0] is not None  # (None: more decides the scale)
                     and type(coeff) in (float, int, type(None)))
        if shareable:
            key = (id(group), id(objects[0]), id(objects[1]), objects[2] is None, inputs[1:])
            shared = self._shared.get(key)
            if shared is not None and shared[0] is group and shared[1] is objects[0] \
                    and shared[2] is objects[1]:
                settings = shared[3]
        if settings is None:
            settings = derive(param, group, grouped, construction)
            if shareable:
                if len(self._shared) >= self.SHARED_MAX:
                    self._shared.clear()
                self._shared[key] = (group, objects[0], objects[1], settings)
        self._params[id(param)] = (param, group, inputs, objects, settings)
        return settings


# What a group's settings are read from and cannot change in place (see Reader.group); the
# first _OBJECTS_KEPT objects read are kept in the settings as objects.
_UNCHANGING = (float, int, bool, str, type(None))
_OBJECTS_KEPT = 3


class Reader:
    """The settings now, read from ``optimizer`` as the built-in reads them at step time (its
    attributes and group dicts; see :func:`group_settings`), derived per parameter through
    :class:`Derivations`. The step and the static ops receive this, not the optimizer."""

    def __init__(self, optimizer):
        self._optimizer = optimizer
        # grouped parameters' attribute objects at construction (``Momentum._add_param_group``)
        self.construction = ConstructionAttributes()
        self._derivations = Derivations()
        self._group_inputs = {}  # id(group) -> (group, the objects read, its GroupSettings)

    def grouped(self) -> bool:
        groups = self._optimizer._param_groups
        return bool(groups) and isinstance(groups[0], dict)

    def groups(self):
        """``[(group or None, its parameters)]`` (None: the optimizer without groups)."""
        if self.grouped():
            return [(group, group["params"]) for group in self._optimizer._param_groups]
        return [(None, self._optimizer._param_groups)]

    def params_of(self, group):
        return group["params"] if group is not None else self._optimizer._param_groups

    def group(self, group) -> GroupSettings:
        """``group``'s settings now (``group`` None: the optimizer's, without groups); a
        setting the optimizer's rule does not take, off its default, is refused.

        Read and checked again unless every object they are read from is the one of the
        previous step and none can change in place (numbers, bools, strings, None; the
        clip and regularizer objects are kept in the settings, whose values are read where
        they are used): then the settings are what they were, and so is their check."""
        inputs = self._group_inputs_now(group)
        previous = self._group_inputs.get(id(group))
        if (previous is not None and previous[0] is group
                and all(map(operator.is_, previous[1], inputs))):
            return previous[2]
        settings = group_settings(group, self._optimizer)
        self._optimizer._rule.refuse_group(settings, "optimizer: " if group is None
                                           else "parameter group: ")
        settings = self._derivations.group(id(group), settings)
        if all(type(value) in _UNCHANGING for value in inputs[_OBJECTS_KEPT:]):
            self._group_inputs[id(group)] = (group, inputs, settings)
        else:
            self._group_inputs.pop(id(group), None)
        return settings

    def _group_inputs_now(self, group) -> tuple:
        """The objects :func:`group_settings` reads for ``group`` now: first the ones it keeps
        (:data:`_OBJECTS_KEPT` of them: the rule, the clip, the optimizer's regularizer),
        then the values."""
        optimizer = self._optimizer
        if group is None:
            own = (optimizer._grad_clip, optimizer._regularization_method,
                   optimizer._regularization_coeff,
                   *[getattr(optimizer, f"_{name}") for name in RULE_SETTING_NAMES])
        else:
            own = (group["grad_clip"], group["regularization_method"],
                   group["regularization_coeff"], *[group[name] for name in RULE_SETTING_NAMES])
        return (optimizer._rule, own[0], optimizer.regularization, *own[1:],
                optimizer._multi_precision, optimizer._rescale_grad_on_cpu)

    def param(self, param, group: GroupSettings) -> ParamSettings:
        """``param``'s settings now: the one derivation every path uses."""
        settings = self._derivations.settings(param, group, self.grouped(), self.construction)
        if settings.l2_coeff is not None and settings.l2_coeff is not group.l2_coeff:
            self._optimizer._rule.refuse_unreceived({"l2_coeff": settings.l2_coeff},
                                                    f"{param.name}'s regularizer: ")
        return settings
