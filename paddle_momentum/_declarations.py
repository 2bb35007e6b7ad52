"""The rule's per-group settings, declared once: a small module (it imports only the checks,
``_validation``), so that the kernel's side (``_boundary``, ``_generate``, ``_rules``) reads
the declarations without the derivation of settings (``_settings``).

Every per-group scalar of the rule is one :class:`Setting` in :data:`RULE_SETTINGS` (name,
default, check, how the kernel takes it): the constructor's checks and defaults, the group
keys, the step-time reading (``_settings``) and the kernel's attributes all come from those
declarations.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from . import _validation as check


@dataclasses.dataclass(frozen=True)
class Setting:
    """One per-group scalar setting of the update rule, declared once.

    ``name`` is at once the constructor's argument, a group dict's key, the keyword of
    :func:`paddle_momentum.rule.momentum_update` and the fused kernel's attribute (in
    ``PM_RULE_ATTRIBUTES``, generated from these declarations by ``_generate``). The built-in
    reads it at every step: from
    the optimizer's attribute ``_<name>`` without groups, from the group dict's key with
    them; so do we, and ``check(value, where)`` validates it each time (at construction, in a
    group, at every step), with the error the constructor would raise. ``kernel`` is how the
    kernel takes the value: "double" (the double's 64 bits: the rule's Python value exactly;
    ``attribute()`` in the rule rounds it through float32 as Paddle's kernel takes mu),
    "float32" (a float32 attribute), "bool". ``keyword_only``: one of our keyword-only
    constructor arguments (the built-in has none of these)."""

    name: str
    default: object
    check: Callable
    kernel: str
    keyword_only: bool = False

    def given(self, group, optimizer):
        """The setting's object now, as given (unchecked): ``group``'s key (a normalized group
        dict), or without groups (``group`` None) the optimizer's attribute."""
        return getattr(optimizer, f"_{self.name}") if group is None else group[self.name]

    def checked(self, value, group):
        """``value`` (:meth:`given`'s) checked, with the error naming where it was read."""
        return self.check(value, self.name if group is None
                          else f"parameter group '{self.name}'")


RULE_SETTINGS = (
    Setting("momentum", 0.9, check.check_momentum, "double"),
    Setting("use_nesterov", False, check.check_bool, "bool"),
    Setting("rescale_grad", 1.0, check.check_rescale_grad, "double"),
    # torch.optim.SGD's options; the defaults are Paddle's behaviour
    Setting("dampening", 0.0, check.check_dampening, "double", keyword_only=True),
    Setting("maximize", False, check.check_bool, "bool", keyword_only=True),
    Setting("decoupled_weight_decay", 0.0, check.check_decoupled_weight_decay, "double",
            keyword_only=True),
)
RULE_SETTING_NAMES = tuple(setting.name for setting in RULE_SETTINGS)
# (the keyword-only ones are the torch.optim.SGD options)
KEYWORD_ONLY = tuple(setting.name for setting in RULE_SETTINGS if setting.keyword_only)


def rule_options(**values):
    """The rule's keyword arguments (as ``ParamSettings.rule_options()`` gives them) with
    every setting at its default and no fused decay, but for ``values``."""
    options = {setting.name: setting.default for setting in RULE_SETTINGS}
    options["l2_coeff"] = None
    options.update(values)
    return options


def torch_option_on(rule) -> bool:
    """Whether a torch.optim.SGD option (a keyword-only setting) is on in ``rule`` (the
    values of :data:`RULE_SETTINGS`, in their order)."""
    return any(value for name, value in zip(RULE_SETTING_NAMES, rule) if name in KEYWORD_ONLY)


def check_rule_values(values: dict):
    """What the settings refuse together (``values``: name -> checked value)."""
    if values["dampening"] and values["use_nesterov"]:
        raise ValueError("Nesterov momentum requires zero dampening (as in torch.optim.SGD), "
                         f"got use_nesterov=True with dampening={values['dampening']!r}")
