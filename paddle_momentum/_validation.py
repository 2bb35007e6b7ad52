"""Argument checks run once, at construction, before anything is created or changed.

Each error names the argument and the bad value. Where the built-in raises a different
exception type for the same input (often late, from C++), ours also derives from that type, so
``except IndexError`` written against the built-in still catches ours; where the built-in's type
depends on the value (it fails by accident), ours derives from each of them.
"""

from __future__ import annotations

import math
import numbers
import types

import numpy as np
import paddle
from paddle.nn.clip import GradientClipBase
from paddle.optimizer.lr import LRScheduler
from paddle.regularizer import L2Decay, WeightDecayRegularizer

from . import _compat


class ParametersIndexError(ValueError, IndexError):
    """``parameters`` is empty (the built-in raises a bare IndexError)."""


class ParametersAttributeError(TypeError, AttributeError):
    """An element of ``parameters`` is not a tensor (the built-in raises AttributeError)."""


class GroupAssertionError(ValueError, AssertionError):
    """A parameter group lacks ``params`` (the built-in fails an assert)."""


class GroupTypeError(TypeError, ValueError, AttributeError, AssertionError):
    """``parameters`` mixes group dicts with entries that are not dicts. The built-in fails
    on it by accident, with a type that depends on the entry and its place: AttributeError
    when the first entry is not a dict (the dicts are then taken as parameters), ValueError
    for a Tensor after a dict (indexed with a str), AssertionError for a list of Tensors
    (a Tensor compared with a str), TypeError for others. Ours derives from all four."""


class GroupParamsDictError(TypeError, KeyError, AttributeError):
    """A group's ``params`` is a dict (the built-in raises KeyError for the first group,
    AttributeError for a later one: it takes the dict's keys as parameters)."""

    __str__ = TypeError.__str__  # (KeyError's would quote the message)


class LearningRateScaleError(TypeError, ValueError):
    """A group's ``learning_rate`` is not a number. The built-in multiplies its learning-rate
    tensor by it at the first step: TypeError for None or an object, ValueError for a str,
    a list, a complex or a Tensor that is not a 0-d float one ('x' * tensor is a str, handed
    to the kernel)."""


class NotSetError(ValueError, TypeError):
    """The optimizer's ``momentum`` or ``learning_rate`` is None (the built-in's constructor
    raises ValueError), or a group's ``momentum`` (its kernel raises TypeError at the first
    step)."""


class StateDictError(ValueError, AssertionError):
    """A state dict lacks an entry or has a wrong shape (the built-in fails an assert)."""


class StateDictTypeError(TypeError, AttributeError, AssertionError):
    """The state dict is not a dict (the built-in raises AttributeError, or for a list,
    which has ``copy()``, fails its assert that the velocities are in it)."""


class StateDictDtypeError(TypeError, AssertionError):
    """A state-dict tensor has the wrong dtype (the built-in fails an assert)."""


class StateDictEntryTypeError(TypeError, AssertionError):
    """A state-dict entry is not a Tensor or numpy array (the built-in fails an assert in
    ``set_value``)."""


class LossTypeError(TypeError, AssertionError):
    """``minimize``'s loss is not a Tensor (the built-in fails an assert)."""


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def describe(value) -> str:
    """A short description of ``value`` for a message: never a tensor's values or a whole
    list's repr (a ResNet-18's parameters printed as one message: 207,247 characters)."""
    if _compat.is_tensor(value):
        kind = _kind_of(value)
        name = getattr(value, "name", None)
        named = f" {name!r}" if name and kind == "Parameter" else ""
        return (f"a {kind}{named} of shape {list(value.shape)} and dtype "
                f"{_compat.dtype_name(value.dtype)}")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) \
            and _compat.is_tensor(value[1]):
        return f"a (name, {_kind_of(value[1])}) pair ({value[0]!r}, ...)"
    if isinstance(value, (list, tuple)):
        kinds = sorted({_kind_of(v) for v in value})
        what = kinds[0] + "s" if len(kinds) == 1 else " and ".join(k + "s" for k in kinds)
        return f"a {type(value).__name__} of {len(value)} {what}" if value else \
            f"an empty {type(value).__name__}"
    if isinstance(value, types.GeneratorType) or (
            hasattr(value, "__next__") and hasattr(value, "__iter__")):
        return f"a {type(value).__name__}"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} of {type(value)}"


def _kind_of(value) -> str:
    if _compat.is_tensor(value):
        return "Parameter" if isinstance(value, paddle.base.framework.EagerParamBase) \
            else "Tensor"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return "(name, value) pair"
    return type(value).__name__


def _tensor_number(value, name):
    """A one-element float Tensor given for a number (the built-in takes a 0-d one as
    ``momentum``): its value now, as a float."""
    if not _compat.is_float_dtype(value.dtype) or list(value.shape) != []:
        raise TypeError(f"{name} as a Tensor must be a 0-d float tensor, got "
                        f"{describe(value)}")
    return float(value)


def check_learning_rate(value, name="learning_rate"):
    """A float, an LRScheduler, a 0-d / shape-[1] float tensor, or in a static program a 0-d
    / shape-[1] float graph value (a fed ``paddle.static.data``, or computed)."""
    if value is None:
        raise NotSetError(f"{name} is not set")
    if isinstance(value, LRScheduler):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError(f"{name} must not be NaN, got {value!r}")
        return float(value)
    if _compat.is_tensor(value) and not isinstance(value, paddle.Tensor):
        # a static program's value (legacy Variable, PIR Value): fed or computed in the graph
        shape = list(value.shape)
        if not _compat.is_float_dtype(value.dtype) or len(shape) > 1 or shape not in ([], [1]):
            raise TypeError(
                f"{name} as a graph value must be a 0-d or shape [1] float value, got dtype "
                f"{_compat.dtype_name(value.dtype)} and shape {shape}"
            )
        return value
    if isinstance(value, paddle.Tensor):
        if not _compat.is_float_dtype(value.dtype) or value.size != 1 or len(value.shape) > 1:
            raise TypeError(
                f"{name} as a Tensor must be a 0-d or shape [1] float tensor, got dtype "
                f"{value.dtype} and shape {list(value.shape)}"
            )
        if math.isnan(float(value)):
            raise ValueError(f"{name} must not be NaN, got {float(value)!r}")
        return value
    hint = ""
    if _looks_like_parameters(value):
        hint = (": parameters given as the first argument (learning_rate)? Pass them as "
                "parameters=...")
    raise TypeError(f"{name} must be a float, a 0-d float Tensor or an LRScheduler, got "
                    f"{describe(value)}{hint}")


def _looks_like_parameters(value) -> bool:
    """A list, tuple or iterator of tensors or (name, tensor) pairs, or any generator."""
    if isinstance(value, types.GeneratorType):
        return True
    if isinstance(value, (list, tuple)) and value:
        first = value[0]
        return _compat.is_tensor(first) or isinstance(first, dict) or (
            isinstance(first, tuple) and len(first) == 2 and _compat.is_tensor(first[1]))
    return False


def _real_number(value, name) -> float:
    if isinstance(value, paddle.Tensor):
        return _tensor_number(value, name)
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    return float(value)


def check_momentum(value, name="momentum"):
    if value is None:
        raise NotSetError(f"{name} is not set")
    value = _real_number(value, name)
    if not math.isfinite(value):  # (a negative one is taken, as by the built-in)
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_rescale_grad(value, name="rescale_grad"):
    """A real number; a non-finite one too, as the built-in takes it (its dense CPU kernel
    ignores the value; where it is applied, the gradients become inf or NaN there too)."""
    return _real_number(value, name)


def check_bool(value, name):
    """A bool: ``True``/``False``, a numpy bool, or the ints 0 and 1 (a YAML or argparse
    config gives those). The built-in takes anything (``bool('no')`` is True): other values
    are refused here."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool (or 0/1), got {describe(value)}")


def _finite_coefficient(coeff, l2) -> bool:
    """Finite, and an L2 coefficient (a float32 attribute of the update) also as float32."""
    coeff = float(coeff)
    if l2:
        with np.errstate(over="ignore"):
            coeff = float(np.float32(coeff))
    return math.isfinite(coeff)


def check_weight_decay(value, name="weight_decay", allow_int=True):
    """None, an L2 coefficient or a WeightDecayRegularizer; one rule for both: a
    coefficient must be finite (NaN or inf would turn every parameter into NaN).

    An L2 coefficient is a Python float, or an int where ``allow_int``, as the built-in
    takes it (it converts an int at the top level only). A numpy number other than
    ``np.float64`` (a float) is refused like a str, as the built-in refuses it (at its first
    step: "'numpy.float32' object is not callable"). An ``L2Decay``'s coefficient, fused
    into the update, must be a number, as the update reads it (the built-in's kernel refuses
    a str at its first step)."""
    if value is None:
        return value
    if isinstance(value, WeightDecayRegularizer):
        coeff = getattr(value, "_coeff", None)
        if isinstance(value, L2Decay):
            check_real(coeff, f"{name} coefficient")
        if _is_real(coeff) and not _finite_coefficient(coeff, isinstance(value, L2Decay)):
            raise ValueError(f"{name} coefficient must be finite, got {type(value).__name__}"
                             f"({float(coeff)!r})")
        return value
    if isinstance(value, (int, float) if allow_int else float) and not isinstance(value, bool):
        value = float(value)
        if not _finite_coefficient(value, l2=True):
            raise ValueError(f"{name} must be finite (as the float32 the update takes), got "
                             f"{value!r}")
        return value
    number = "a float, an int" if allow_int else "a float"
    hint = ""
    if isinstance(value, (numbers.Number, np.generic)) and \
            not isinstance(value, (bool, np.bool_)):
        hint = f" (pass float({name}): the built-in takes no other number type here)"
    raise TypeError(
        f"{name} must be None, {number} or a paddle.regularizer.WeightDecayRegularizer, "
        f"got {describe(value)}{hint}"
    )


def check_group_weight_decay(value, name):
    """A group's ``weight_decay``: as the optimizer's, but an int is refused (the built-in
    converts one at the top level only; in a group it fails at the first step with "'int'
    object is not callable")."""
    return check_weight_decay(value, name, allow_int=False)


def check_grad_clip(value, name="grad_clip"):
    if value is not None and not isinstance(value, GradientClipBase):
        raise TypeError(
            f"'{name}' should be an instance of GradientClipBase's derived class, got "
            f"{describe(value)}"
        )
    return value


def check_lr_scale(value, name):
    """A parameter group's ``learning_rate``: a scale of the optimizer's learning rate, any
    finite number, as the built-in takes it (0.0 freezes the group; the built-in takes a
    negative one too). NaN or inf would turn every parameter of the group into NaN. A 0-d
    float Tensor is kept as it is: the built-in takes it as the group's learning rate itself,
    read at every step."""
    if isinstance(value, paddle.Tensor) and _compat.is_float_dtype(value.dtype) \
            and list(value.shape) == []:
        return value
    try:
        value = _real_number(value, name)
    except TypeError as error:
        raise LearningRateScaleError(str(error)) from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def check_real(value, name, allow_bool=False):
    """Any real number, as a float (with ``allow_bool``, a bool counts as 0 or 1)."""
    if allow_bool and isinstance(value, (bool, np.bool_)):
        return float(value)
    return _real_number(value, name)


def check_not_layer(value, name):
    """A Layer given where its parameters belong: a TypeError that says so (a Sequential
    would otherwise be iterated as its sublayers)."""
    if isinstance(value, paddle.nn.Layer):
        raise TypeError(f"{name} must be an iterable of Tensors, got a "
                        f"{type(value).__name__} layer: pass its .parameters()")


def check_parameter_list(params, name):
    """A list of float tensors; raises for anything else."""
    if isinstance(params, (paddle.Tensor, framework_variable_types())):
        return [params]
    check_not_layer(params, name)
    if isinstance(params, (set, frozenset)):
        raise TypeError(
            f"{name}: optimizer parameters should be in ordered collections, but received set, "
            "please use list instead."
        )
    if isinstance(params, dict):  # (the optimizer's ``parameters`` is refused before)
        raise GroupParamsDictError(
            f"{name} must be a list of Tensors, got a dict: a group's Tensors are listed as "
            "{'params': [tensor, ...], ...}"
        )
    params = listed(params, name)
    for index, param in enumerate(params):
        if not _compat.is_tensor(param):
            hint = ""
            if isinstance(param, tuple) and len(param) == 2 and _compat.is_tensor(param[1]):
                hint = (" (named_parameters() gives (name, parameter) pairs: pass "
                        "model.parameters())")
            raise ParametersAttributeError(
                f"{name}[{index}] must be a paddle Tensor, got {describe(param)}{hint}"
            )
        if not _compat.is_float_dtype(param.dtype):
            raise TypeError(
                f"{name}[{index}] ({param.name}) must have a floating dtype, got {param.dtype}"
            )
    return params


def listed(params, name):
    """``list(params)``, with a TypeError naming ``name`` for what is not iterable (the
    built-in fails iterating or indexing it: a TypeError too)."""
    try:
        iterator = iter(params)
    except TypeError:
        raise TypeError(f"{name} must be an iterable of Tensors, got {describe(params)}") \
            from None
    return list(iterator)


def framework_variable_types():
    return (paddle.base.framework.Variable, paddle.pir.Value)


def check_unique(params, name="parameters"):
    seen = set()
    for param in params:
        if id(param) in seen:
            raise ValueError(
                f"some parameters appear more than once in {name} (or in more than one "
                f"parameter group): {param.name}"
            )
        seen.add(id(param))


def check_state_entry(name, value, expected):
    """A state-dict ``value`` for the existing tensor ``expected``: same shape and dtype."""
    if not (isinstance(value, (paddle.Tensor, np.ndarray))):
        raise StateDictEntryTypeError(f"state dict entry {name!r} must be a Tensor or numpy "
                                      f"array, got {type(value)}")
    shape = list(value.shape)
    if shape != list(expected.shape):
        raise StateDictError(f"state dict entry {name!r} has shape {shape}, expected "
                         f"{list(expected.shape)}")
    dtype = _compat.dtype_name(value.dtype) if isinstance(value, paddle.Tensor) \
        else str(value.dtype)
    if dtype != _compat.dtype_name(expected.dtype):
        raise StateDictDtypeError(f"state dict entry {name!r} has dtype {dtype}, expected "
                        f"{_compat.dtype_name(expected.dtype)}")


def check_dampening(value, name="dampening"):
    """torch.optim.SGD's dampening: in [0, 1]."""
    value = _real_number(value, name)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value


def check_decoupled_weight_decay(value, name="decoupled_weight_decay"):
    """The SGDW coefficient: finite and >= 0."""
    value = _real_number(value, name)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return value
