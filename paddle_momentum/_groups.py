"""The ``parameters`` argument at construction: a list of Tensors, or parameter-group dicts,
checked and normalized as the built-in takes them (each group's settings validated, the
optimizer's where a group gives none), and what the built-in writes into the caller's dicts."""

from __future__ import annotations

import paddle

from . import _compat, _declarations
from . import _validation as check
from ._settings import split_weight_decay


def checked_parameters(parameters, defaults, rule):
    """The parameter list, or normalized copies of the group dicts (the user's stay as given;
    ``defaults``: the optimizer's settings a group does not give; ``rule``: the optimizer's
    ``_rules.Rule``, which refuses a setting it does not take)."""
    if parameters is None:
        if _compat.in_dygraph():
            raise AttributeError(
                "parameters argument given to the Optimizer should not be None in dygraph mode."
            )
        return None
    if _compat.is_tensor(parameters):
        raise TypeError(
            "`parameters` argument given to the optimizer should be an iterable of paddle "
            f"Tensors, but got argument type is `{type(parameters)}`."
        )
    if isinstance(parameters, dict):
        raise TypeError(
            "`parameters` argument should not get dict type, if parameter groups is needed, "
            "please set `parameters` as list of dict"
        )
    check.check_not_layer(parameters, "parameters")
    parameters = check.listed(parameters, "parameters")
    if not parameters:
        raise check.ParametersIndexError("parameters is empty: give at least one parameter")
    if any(isinstance(entry, dict) for entry in parameters):
        groups = [normalized_group(group, i, defaults, rule)
                  for i, group in enumerate(parameters)]
        check.check_unique([p for group in groups for p in group["params"]])
        if not groups[0]["params"]:
            raise check.ParametersIndexError("parameters[0]['params'] is empty")
        return groups
    parameters = check.check_parameter_list(parameters, "parameters")
    check.check_unique(parameters)
    return parameters

def normalized_group(group, index, defaults, rule):
    """A normalized copy of the group dict ``group`` (``parameters[index]``): its parameters
    and every setting, checked, the optimizer's ``defaults`` where it gives none, and the
    built-in's keys for its fused decay."""
    where = f"parameters[{index}]"
    if not isinstance(group, dict):
        raise check.GroupTypeError(
            f"parameters mixes parameter-group dicts and other entries: {where} is "
            f"{check.describe(group)}; give a list of Tensors, or of dicts "
            "{'params': [...], ...}"
        )
    if "params" not in group:
        raise check.GroupAssertionError(
            "params should be set in parameters if parameter groups are optimized in "
            f"different options ({where} has keys {sorted(group)})"
        )
    validators = {
        "learning_rate": check.check_lr_scale,
        "weight_decay": check.check_group_weight_decay,
        "grad_clip": check.check_grad_clip,
        **{setting.name: setting.check for setting in _declarations.RULE_SETTINGS},
    }
    # (the two regularization keys a built-in adds are recomputed, as the built-in does)
    allowed = ["params", *validators]
    unknown = sorted(set(group) - set(allowed)
                     - {"regularization_method", "regularization_coeff"})
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: {allowed}")
    normalized = {"params": check.check_parameter_list(group["params"], f"{where}['params']")}
    for key, validate in validators.items():
        normalized[key] = (
            validate(group[key], f"{where}['{key}']") if key in group else defaults[key]
        )
        if (key in _declarations.RULE_SETTING_NAMES
                and isinstance(group.get(key), paddle.Tensor)):
            normalized[key] = group[key]  # (read, and checked, at every step)
    _declarations.check_rule_values(normalized)
    rule.refuse_unreceived(
        dict(normalized, l2_coeff=split_weight_decay(normalized["weight_decay"])[0]),
        f"{where}: ")
    # The built-in's group keys for the fused decay, read at every step.
    normalized["regularization_method"], normalized["regularization_coeff"] = \
        fused_decay_setting(split_weight_decay(normalized["weight_decay"])[0])
    return normalized


def write_group_decays(groups, weight_decay):
    """What the built-in's constructor writes into the caller's group dicts (before anything
    else reads them): ``regularization_method`` and ``regularization_coeff`` (its fused
    decay), and ``weight_decay`` replaced by None where it is fused (a float or an
    ``L2Decay``; a group without one takes the optimizer's). Code that builds a second
    optimizer from the same dicts (PaddleClas does) depends on it: the second one then has no
    fused decay, with the built-in and with ours."""
    for group in groups:
        fused_l2, other = split_weight_decay(
            group["weight_decay"] if "weight_decay" in group else weight_decay)
        group["regularization_method"], group["regularization_coeff"] = \
            fused_decay_setting(fused_l2)
        group["weight_decay"] = other


def fused_decay_setting(fused_l2):
    """``(regularization_method, regularization_coeff)`` as the built-in names a fused L2
    coefficient (None: no fused decay)."""
    return ("", 0.0) if fused_l2 is None else ("l2_decay", fused_l2)
