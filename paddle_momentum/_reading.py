"""The settings now, read from the optimizer as the built-in reads them at step time, and
read again only where something they come from changed (:class:`Reader`,
:class:`Derivations`): what each piece means and how it is derived is ``_settings``'.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from ._settings import (GROUP_OBJECTS_KEPT, ConstructionAttributes, GroupSettings,
                        ParamSettings, attribute_objects, derive, group_inputs, group_settings)


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


# What a group's settings are made of and cannot change in place (see Reader.group).
_UNCHANGING = (float, int, bool, str, type(None))


class Reader:
    """The settings now, read from ``optimizer`` as the built-in reads them at step time (its
    attributes and group dicts; see :func:`group_settings`), derived per parameter through
    :class:`Derivations`. The step and the static ops receive this, not the optimizer."""

    def __init__(self, optimizer):
        self._optimizer = optimizer
        # grouped parameters' attribute objects at construction (``Momentum._add_param_group``)
        self.construction = ConstructionAttributes()
        self._derivations = Derivations()
        # id(group) -> (group, the optimizer's rule, its group_inputs, its GroupSettings)
        self._group_inputs = {}

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
        rule = self._optimizer._rule  # (what it refuses depends on it)
        inputs = group_inputs(group, self._optimizer)
        previous = self._group_inputs.get(id(group))
        if (previous is not None and previous[0] is group and previous[1] is rule
                and all(map(operator.is_, previous[2], inputs))):
            return previous[3]
        settings = group_settings(group, inputs)
        rule.refuse_group(settings, "optimizer: " if group is None else "parameter group: ")
        settings = self._derivations.group(id(group), settings)
        if all(type(value) in _UNCHANGING for value in inputs[GROUP_OBJECTS_KEPT:]):
            self._group_inputs[id(group)] = (group, rule, inputs, settings)
        else:
            self._group_inputs.pop(id(group), None)
        return settings

    def param(self, param, group: GroupSettings) -> ParamSettings:
        """``param``'s settings now: the one derivation every path uses."""
        settings = self._derivations.settings(param, group, self.grouped(), self.construction)
        if settings.l2_coeff is not None and settings.l2_coeff is not group.l2_coeff:
            self._optimizer._rule.refuse_unreceived({"l2_coeff": settings.l2_coeff},
                                                    f"{param.name}'s regularizer: ")
        return settings
