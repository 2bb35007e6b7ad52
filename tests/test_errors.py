"""Bad input: ours raises when it is given (at construction, or at the call), with a message
naming the argument, an exception of (a subclass of) the type the built-in raises for the same
input (the built-in is the oracle: its type is taken at run time, from its construction and
first step, or from the call), and changes nothing. Where the two differ on whether an input
raises at all, the row is a documented departure (docs/differences.md, by the row's id)."""

import collections
import decimal
import fractions
import pathlib
import types

import numpy as np
import paddle
import pytest
from paddle.regularizer import L1Decay, L2Decay

from harness import assert_same
from paddle_momentum import Momentum

BUILTIN = paddle.optimizer.Momentum
DIFFERENCES = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "differences.md")


def _linear():
    paddle.seed(0)
    return paddle.nn.Linear(3, 2)


def _groups(model, **extra):
    return [dict({"params": [model.weight]}, **extra), {"params": [model.bias]}]


def _train_step(model, optimizer):
    model(paddle.ones([1, 3])).sum().backward()
    optimizer.step()


# An attempt, on the built-in or ours: the first exception (None: none), where it came from
# ("call": constructing, or the method called; "step": the built-in's first step after it),
# and whether everything observed is as it was before.
Outcome = collections.namedtuple("Outcome", "error stage unchanged")


def _attempt(call, then, observed):
    before = observed()
    stage = "call"
    try:
        result = call()
        stage = "step"
        then(result)
    except Exception as error:  # the type is what the rows compare
        return Outcome(error, stage, _unchanged(observed, before))
    return Outcome(None, None, _unchanged(observed, before))


def _unchanged(observed, before):
    try:
        return observed() == before
    except Exception:  # (the built-in's state_dict() after it took a bad one)
        return False


def _ids(value):
    """What the caller gave, by identity: a list's entries and a dict's items (group dicts)."""
    if isinstance(value, dict):
        return [(key, _ids(item)) for key, item in value.items()]
    if isinstance(value, (list, tuple)):
        return [_ids(item) for item in value]
    return id(value)


def _parameters_state(model):
    return [(p.numpy().tobytes(), id(p.regularizer), _ids(dict(p.optimize_attr)))
            for p in model.parameters()]


def construct(make_kwargs):
    """``cls(learning_rate=0.1, parameters=<a Linear's>, **make_kwargs(model))``, then one
    step (the built-in raises many errors only there)."""
    def attempt(cls):
        model = _linear()
        kwargs = dict(learning_rate=0.1, parameters=model.parameters()) | make_kwargs(model)
        return _attempt(lambda: cls(**kwargs), lambda opt: _train_step(model, opt),
                        lambda: (_parameters_state(model), _ids(kwargs)))
    return attempt


def _trained(cls, scheduler):
    model = _linear()
    lr = paddle.optimizer.lr.StepDecay(0.1, step_size=2) if scheduler else 0.1
    opt = cls(lr, parameters=model.parameters())
    _train_step(model, opt)
    return model, opt


def _optimizer_state(model, opt):
    scheduler = opt._learning_rate
    return (_parameters_state(model), opt.get_lr(), getattr(scheduler, "last_epoch", None),
            id(opt._master_weights),
            {name: value.numpy().tobytes() for name, value in opt.state_dict().items()
             if isinstance(value, paddle.Tensor)})


def calling(action, scheduler=False):
    """``action(optimizer, model)`` on an optimizer after one step (with a StepDecay when
    ``scheduler``)."""
    def attempt(cls):
        model, opt = _trained(cls, scheduler)
        if scheduler:
            opt._learning_rate.step()  # (so a wrongly applied LR_Scheduler state shows)
        return _attempt(lambda: action(opt, model), lambda _: None,
                        lambda: _optimizer_state(model, opt))
    return attempt


def loading(make_bad, scheduler=False):
    """``set_state_dict(make_bad(<a copy of the optimizer's own state dict>))``."""
    def action(opt, model):
        state = {k: (v.clone() if isinstance(v, paddle.Tensor) else dict(v))
                 for k, v in opt.state_dict().items()}
        opt.set_state_dict(make_bad(state))
    return calling(action, scheduler)


def _fresh_loading(make_bad):
    """``set_state_dict`` before the first step, then a step."""
    def attempt(cls):
        model = _linear()
        opt = cls(0.1, parameters=model.parameters())
        return _attempt(lambda: opt.set_state_dict(make_bad({})),
                        lambda _: _train_step(model, opt),
                        lambda: _parameters_state(model))
    return attempt


def _without(state, key):
    return {k: v for k, v in state.items() if k != key}


def _replace_velocity(value):
    return lambda s: {k: (value if "w_0_velocity" in k else v) for k, v in s.items()}


def _in_static_mode(action):
    def run(opt, model):
        paddle.enable_static()
        try:
            action(opt, model)
        finally:
            paddle.disable_static()
    return run


def _loss(model):
    return model(paddle.ones([1, 3])).sum()


class _Object:
    pass


# id -> (attempt, text ours' message must contain). The built-in raises for every row; ours
# raises an instance of the built-in's type (a test below), at the call.
BAD_INPUTS = {
    # learning_rate
    "lr_none": (construct(lambda m: dict(learning_rate=None)), "learning_rate"),
    "lr_int": (construct(lambda m: dict(learning_rate=1)), "learning_rate"),
    "lr_str": (construct(lambda m: dict(learning_rate="0.1")), "learning_rate"),
    "lr_np_float32": (construct(lambda m: dict(learning_rate=np.float32(0.1))),
                      "learning_rate"),
    "lr_np_int64": (construct(lambda m: dict(learning_rate=np.int64(1))), "learning_rate"),
    "lr_list": (construct(lambda m: dict(learning_rate=[0.1])), "learning_rate"),
    "lr_ndarray": (construct(lambda m: dict(learning_rate=np.array(0.1))), "learning_rate"),
    "lr_int_tensor": (construct(lambda m: dict(learning_rate=paddle.to_tensor(1))),
                      "learning_rate"),
    "lr_vector_tensor": (construct(lambda m: dict(learning_rate=paddle.to_tensor([0.1, 0.2]))),
                         "learning_rate"),
    "lr_scheduler_class": (construct(lambda m: dict(
        learning_rate=paddle.optimizer.lr.StepDecay)), "learning_rate"),
    "lr_given_parameters": (construct(lambda m: dict(learning_rate=m.parameters())),
                            "parameters="),
    # momentum
    "momentum_none": (construct(lambda m: dict(momentum=None)), "momentum"),
    "momentum_str": (construct(lambda m: dict(momentum="a")), "momentum"),
    "momentum_list": (construct(lambda m: dict(momentum=[0.9])), "momentum"),
    "momentum_complex": (construct(lambda m: dict(momentum=0.9 + 0j)), "momentum"),
    "momentum_object": (construct(lambda m: dict(momentum=_Object())), "momentum"),
    "momentum_matrix_tensor": (construct(lambda m: dict(momentum=paddle.ones([3, 3]))),
                               "momentum"),
    # parameters
    "parameters_none": (construct(lambda m: dict(parameters=None)), "parameters"),
    "parameters_empty_list": (construct(lambda m: dict(parameters=[])), "parameters"),
    "parameters_empty_tuple": (construct(lambda m: dict(parameters=())), "parameters"),
    "parameters_single_tensor": (construct(lambda m: dict(parameters=m.weight)), "parameters"),
    "parameters_dict": (construct(lambda m: dict(parameters={"params": [m.weight]})),
                        "parameters"),
    "parameters_int": (construct(lambda m: dict(parameters=3)), "parameters"),
    "parameters_str": (construct(lambda m: dict(parameters="abc")), "parameters"),
    "parameters_floats": (construct(lambda m: dict(parameters=[1.0, 2.0])), "parameters"),
    "parameters_none_entry": (construct(lambda m: dict(parameters=[m.weight, None])),
                              "parameters[1]"),
    "parameters_nested": (construct(lambda m: dict(parameters=[[m.weight]])), "parameters[0]"),
    "parameters_layer": (construct(lambda m: dict(parameters=m)), "parameters"),
    "parameters_named": (construct(lambda m: dict(parameters=m.named_parameters())),
                         "model.parameters()"),
    # a list mixing group dicts and other entries (the built-in's type depends on the entry)
    "parameters_tensor_then_group": (construct(lambda m: dict(
        parameters=[m.weight, {"params": [m.bias]}])), "parameters[0]"),
    "parameters_none_then_group": (construct(lambda m: dict(
        parameters=[None, {"params": [m.bias]}])), "parameters[0]"),
    "parameters_group_then_tensor": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, m.bias])), "parameters[1]"),
    "parameters_group_then_none": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, None])), "parameters[1]"),
    "parameters_group_then_int": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, 3])), "parameters[1]"),
    "parameters_group_then_str": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, "abc"])), "parameters[1]"),
    "parameters_group_then_list": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, [m.bias]])), "parameters[1]"),
    "parameters_group_then_empty_list": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, []])), "parameters[1]"),
    "parameters_group_then_tuple": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, (m.bias,)])), "parameters[1]"),
    "parameters_tuple_tensor_then_group": (construct(lambda m: dict(
        parameters=(m.weight, {"params": [m.bias]}))), "parameters[0]"),
    "parameters_tuple_group_then_tensor": (construct(lambda m: dict(
        parameters=({"params": [m.weight]}, m.bias))), "parameters[1]"),
    "parameters_tuple_group_then_list": (construct(lambda m: dict(
        parameters=({"params": [m.weight]}, [m.bias]))), "parameters[1]"),
    # weight_decay: None, a Python float or int, or a regularizer (numbers of other types
    # fail at the built-in's first step)
    "weight_decay_str": (construct(lambda m: dict(weight_decay="x")), "weight_decay"),
    "weight_decay_list": (construct(lambda m: dict(weight_decay=[0.1])), "weight_decay"),
    "weight_decay_dict": (construct(lambda m: dict(weight_decay={})), "weight_decay"),
    "weight_decay_object": (construct(lambda m: dict(weight_decay=_Object())), "weight_decay"),
    "weight_decay_tensor": (construct(lambda m: dict(weight_decay=paddle.to_tensor(0.1))),
                            "weight_decay"),
    "weight_decay_np_float32": (construct(lambda m: dict(weight_decay=np.float32(0.1))),
                                "float(weight_decay)"),
    "weight_decay_np_float16": (construct(lambda m: dict(weight_decay=np.float16(0.1))),
                                "weight_decay"),
    "weight_decay_np_int64": (construct(lambda m: dict(weight_decay=np.int64(1))),
                              "weight_decay"),
    "weight_decay_np_bool": (construct(lambda m: dict(weight_decay=np.bool_(True))),
                             "weight_decay"),
    "weight_decay_np_float32_nan": (construct(lambda m: dict(
        weight_decay=np.float32("nan"))), "weight_decay"),
    "weight_decay_fraction": (construct(lambda m: dict(
        weight_decay=fractions.Fraction(1, 10))), "weight_decay"),
    "weight_decay_decimal": (construct(lambda m: dict(weight_decay=decimal.Decimal("0.1"))),
                             "weight_decay"),
    "weight_decay_l2_str": (construct(lambda m: dict(weight_decay=L2Decay("x"))),
                            "weight_decay"),
    "weight_decay_l2_class": (construct(lambda m: dict(weight_decay=L2Decay)), "weight_decay"),
    # grad_clip, rescale_grad, name, an unknown keyword
    "grad_clip_float": (construct(lambda m: dict(grad_clip=1.0)), "grad_clip"),
    "grad_clip_str": (construct(lambda m: dict(grad_clip="x")), "grad_clip"),
    "grad_clip_class": (construct(lambda m: dict(grad_clip=paddle.nn.ClipGradByNorm)),
                        "grad_clip"),
    "grad_clip_list": (construct(lambda m: dict(grad_clip=[paddle.nn.ClipGradByNorm(1.0)])),
                       "grad_clip"),
    "rescale_grad_none": (construct(lambda m: dict(rescale_grad=None)), "rescale_grad"),
    "rescale_grad_str": (construct(lambda m: dict(rescale_grad="1.0")), "rescale_grad"),
    "rescale_grad_list": (construct(lambda m: dict(rescale_grad=[1.0])), "rescale_grad"),
    "name_int": (construct(lambda m: dict(name=3)), "name"),
    "name_bytes": (construct(lambda m: dict(name=b"x")), "name"),
    "unknown_keyword": (construct(lambda m: dict(betas=0.9)), "betas"),
    # a parameter group's params
    "group_without_params": (construct(lambda m: dict(parameters=[{"learning_rate": 0.1}])),
                             "params"),
    "group_params_empty": (construct(lambda m: dict(parameters=[{"params": []}])),
                           "parameters[0]['params']"),
    "group_params_none": (construct(lambda m: dict(parameters=[{"params": None}])),
                          "parameters[0]['params']"),
    "group2_params_int": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, {"params": 3}])), "parameters[1]['params']"),
    "group_set": (construct(lambda m: dict(parameters=[{"params": {m.weight}}])), "set"),
    "group2_set": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, {"params": {m.bias}}])), "set"),
    "group_params_floats": (construct(lambda m: dict(parameters=[{"params": [1.0]}])),
                            "parameters[0]['params'][0]"),
    "group_params_str": (construct(lambda m: dict(parameters=[{"params": "abc"}])),
                         "parameters[0]['params'][0]"),
    "group_params_layer": (construct(lambda m: dict(parameters=[{"params": m}])),
                           ".parameters()"),
    "group_params_dict": (construct(lambda m: dict(parameters=[{"params": {"a": m.weight}}])),
                          "parameters[0]['params']"),
    "group2_params_dict": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, {"params": {"a": m.bias}}])),
        "parameters[1]['params']"),
    "group_duplicate": (construct(lambda m: dict(
        parameters=[{"params": [m.weight]}, {"params": [m.weight, m.bias]}])),
        "parameter group"),
    # a parameter group's settings
    "group_lr_str": (construct(lambda m: dict(parameters=_groups(m, learning_rate="x"))),
                     "learning_rate"),
    "group_lr_numeric_str": (construct(lambda m: dict(
        parameters=_groups(m, learning_rate="0.5"))), "learning_rate"),
    "group_lr_none": (construct(lambda m: dict(parameters=_groups(m, learning_rate=None))),
                      "learning_rate"),
    "group_lr_list": (construct(lambda m: dict(parameters=_groups(m, learning_rate=[0.1]))),
                      "learning_rate"),
    "group_lr_object": (construct(lambda m: dict(
        parameters=_groups(m, learning_rate=_Object()))), "learning_rate"),
    "group_lr_complex": (construct(lambda m: dict(
        parameters=_groups(m, learning_rate=0.5 + 0j))), "learning_rate"),
    "group_lr_array": (construct(lambda m: dict(
        parameters=_groups(m, learning_rate=np.array([0.1, 0.2])))), "learning_rate"),
    "group_lr_scheduler": (construct(lambda m: dict(
        parameters=_groups(m, learning_rate=paddle.optimizer.lr.StepDecay(0.1, 2)))),
        "learning_rate"),
    "group_lr_vector_tensor": (construct(lambda m: dict(
        parameters=_groups(m, learning_rate=paddle.to_tensor([0.5, 0.5])))), "learning_rate"),
    "group_lr_int_tensor": (construct(lambda m: dict(
        parameters=_groups(m, learning_rate=paddle.to_tensor(1)))), "learning_rate"),
    "group_momentum_str": (construct(lambda m: dict(parameters=_groups(m, momentum="x"))),
                           "momentum"),
    "group_momentum_none": (construct(lambda m: dict(parameters=_groups(m, momentum=None))),
                            "momentum"),
    "group_momentum_list": (construct(lambda m: dict(parameters=_groups(m, momentum=[0.9]))),
                            "momentum"),
    "group_nesterov_two": (construct(lambda m: dict(parameters=_groups(m, use_nesterov=2))),
                           "use_nesterov"),
    "group_nesterov_str": (construct(lambda m: dict(parameters=_groups(m, use_nesterov="no"))),
                           "use_nesterov"),
    "group_weight_decay_str": (construct(lambda m: dict(
        parameters=_groups(m, weight_decay="x"))), "weight_decay"),
    # (the built-in converts an int weight_decay at the top level only)
    "group_weight_decay_int": (construct(lambda m: dict(parameters=_groups(m, weight_decay=1))),
                               "weight_decay"),
    "group_weight_decay_np_float32": (construct(lambda m: dict(
        parameters=_groups(m, weight_decay=np.float32(0.1)))), "weight_decay"),
    "group_weight_decay_np_int64": (construct(lambda m: dict(
        parameters=_groups(m, weight_decay=np.int64(1)))), "weight_decay"),
    "group_weight_decay_bool": (construct(lambda m: dict(
        parameters=_groups(m, weight_decay=True))), "weight_decay"),
    "group_weight_decay_list": (construct(lambda m: dict(
        parameters=_groups(m, weight_decay=[0.1]))), "weight_decay"),
    "group_weight_decay_l2_str": (construct(lambda m: dict(
        parameters=_groups(m, weight_decay=L2Decay("x")))), "weight_decay"),
    "group_grad_clip_str": (construct(lambda m: dict(parameters=_groups(m, grad_clip="x"))),
                            "grad_clip"),
    "group_grad_clip_float": (construct(lambda m: dict(parameters=_groups(m, grad_clip=1.0))),
                              "grad_clip"),
    "group_rescale_grad_str": (construct(lambda m: dict(
        parameters=_groups(m, rescale_grad="x"))), "rescale_grad"),
    "group_rescale_grad_none": (construct(lambda m: dict(
        parameters=_groups(m, rescale_grad=None))), "rescale_grad"),
    # set_lr, set_lr_scheduler
    "set_lr_str": (calling(lambda o, m: o.set_lr("x")), "set_lr"),
    "set_lr_none": (calling(lambda o, m: o.set_lr(None)), "set_lr"),
    "set_lr_np_float32": (calling(lambda o, m: o.set_lr(np.float32(0.1))), "set_lr"),
    "set_lr_tensor": (calling(lambda o, m: o.set_lr(paddle.to_tensor(0.1))), "set_lr"),
    "set_lr_with_scheduler": (calling(lambda o, m: o.set_lr(0.1), scheduler=True),
                              "LRScheduler"),
    "set_lr_scheduler_float": (calling(lambda o, m: o.set_lr_scheduler(0.1)),
                               "set_lr_scheduler"),
    "set_lr_scheduler_none": (calling(lambda o, m: o.set_lr_scheduler(None)),
                              "set_lr_scheduler"),
    # set_state_dict
    "state_dict_list": (loading(lambda s: list(s.items())), "dict"),
    "state_dict_tuple": (loading(lambda s: tuple(s.items())), "dict"),
    "state_dict_none": (loading(lambda s: None), "dict"),
    "state_dict_str": (loading(lambda s: "x"), "dict"),
    "state_dict_list_before_a_step": (_fresh_loading(lambda s: [("a", 1)]), "dict"),
    "state_dict_missing_velocity": (loading(
        lambda s: _without(s, next(k for k in s if "velocity" in k))), "not found"),
    "state_dict_missing_lr_scheduler": (loading(lambda s: _without(s, "LR_Scheduler"),
                                                scheduler=True), "LR_Scheduler"),
    "state_dict_lr_scheduler_int": (loading(lambda s: dict(s, LR_Scheduler=3),
                                            scheduler=True), "LR_Scheduler"),
    # (the built-in sets last_epoch, then raises for the missing last_lr)
    "state_dict_lr_scheduler_partial": (loading(
        lambda s: dict(s, LR_Scheduler={"last_epoch": 7}), scheduler=True), "last_lr"),
    "state_dict_wrong_shape": (loading(_replace_velocity(paddle.zeros([7]))), "shape"),
    "state_dict_wrong_dtype": (loading(
        lambda s: {k: (v.astype("float64") if "w_0_velocity" in k else v)
                   for k, v in s.items()}), "dtype"),
    "state_dict_numpy_wrong_shape": (loading(
        lambda s: {k: (np.zeros((1, 1), "float32") if "velocity" in k else v)
                   for k, v in s.items()}), "shape"),
    "state_dict_velocity_list": (loading(_replace_velocity([0.0] * 6)), "velocity"),
    "state_dict_velocity_float": (loading(_replace_velocity(1.0)), "velocity"),
    "state_dict_velocity_none": (loading(_replace_velocity(None)), "velocity"),
    "state_dict_velocity_str": (loading(_replace_velocity("x")), "velocity"),
    "state_dict_velocity_dict": (loading(_replace_velocity({})), "velocity"),
    # minimize, step, clear_grad
    "minimize_int": (calling(lambda o, m: o.minimize(3)), "loss"),
    "minimize_none": (calling(lambda o, m: o.minimize(None)), "loss"),
    "minimize_float": (calling(lambda o, m: o.minimize(1.0)), "loss"),
    "minimize_ndarray": (calling(lambda o, m: o.minimize(np.ones(1))), "loss"),
    "minimize_parameter_names": (calling(
        lambda o, m: o.minimize(_loss(m), parameters=[m.weight.name])), "parameters"),
    "minimize_parameter_ints": (calling(lambda o, m: o.minimize(_loss(m), parameters=[3])),
                                "parameters"),
    "step_extra_argument": (calling(lambda o, m: o.step(1)), "step()"),
    "clear_grad_str": (calling(lambda o, m: o.clear_grad("x")), "bool"),
    "step_in_static_mode": (calling(_in_static_mode(lambda o, m: o.step())), "step()"),
}


def _builtin_raises(row, builtin):
    assert builtin.error is not None, (
        f"{row}: the built-in accepts this now; ours raises (move the row to DEPARTURES and "
        "docs/differences.md, or accept it)")


@pytest.mark.parametrize("row", list(BAD_INPUTS))
def test_bad_input_raises_the_builtins_type(row):
    attempt, fragment = BAD_INPUTS[row]
    builtin = attempt(BUILTIN)
    _builtin_raises(row, builtin)
    ours = attempt(Momentum)
    assert ours.error is not None and ours.stage == "call", (
        f"{row}: ours {'raised only at the first step' if ours.error else 'accepts it'}; the "
        f"built-in raises {type(builtin.error).__name__}: {builtin.error}")
    assert isinstance(ours.error, type(builtin.error)), (
        f"{row}: the built-in raises {type(builtin.error).__name__} ({builtin.error}), ours "
        f"{type(ours.error).__name__} ({ours.error})")
    assert fragment in str(ours.error), str(ours.error)
    assert ours.unchanged, f"{row}: ours changed the parameters, the arguments or its state"


# Where ours and the built-in differ on whether an input raises, each listed by its id in
# docs/differences.md. id -> (attempt, ours' exception type (None: ours accepts), text
# ours' message must contain).
DEPARTURES = {
    # ours refuses what the built-in takes (silently wrong numbers, or likely mistakes)
    "lr_nan": (construct(lambda m: dict(learning_rate=float("nan"))), ValueError,
               "learning_rate"),
    "momentum_nan": (construct(lambda m: dict(momentum=float("nan"))), ValueError, "momentum"),
    "momentum_inf": (construct(lambda m: dict(momentum=float("inf"))), ValueError, "momentum"),
    "group_lr_nan": (construct(lambda m: dict(parameters=_groups(m, learning_rate=float("nan")))),
                     ValueError, "learning_rate"),
    "group_lr_inf": (construct(lambda m: dict(parameters=_groups(m, learning_rate=float("inf")))),
                     ValueError, "learning_rate"),
    "group_momentum_nan": (construct(lambda m: dict(
        parameters=_groups(m, momentum=float("nan")))), ValueError, "momentum"),
    "weight_decay_nan": (construct(lambda m: dict(weight_decay=float("nan"))), ValueError,
                         "weight_decay"),
    "weight_decay_inf": (construct(lambda m: dict(weight_decay=float("inf"))), ValueError,
                         "weight_decay"),
    "weight_decay_float32_overflow": (construct(lambda m: dict(weight_decay=1e39)), ValueError,
                                      "weight_decay"),  # (inf as the update's float32)
    "weight_decay_l2_nan": (construct(lambda m: dict(weight_decay=L2Decay(float("nan")))),
                            ValueError, "weight_decay"),
    "weight_decay_l1_inf": (construct(lambda m: dict(weight_decay=L1Decay(float("inf")))),
                            ValueError, "weight_decay"),
    "group_weight_decay_inf": (construct(lambda m: dict(
        parameters=_groups(m, weight_decay=float("-inf")))), ValueError, "weight_decay"),
    "momentum_bool": (construct(lambda m: dict(momentum=True)), TypeError, "momentum"),
    "rescale_grad_bool": (construct(lambda m: dict(rescale_grad=True)), TypeError,
                          "rescale_grad"),
    "weight_decay_bool": (construct(lambda m: dict(weight_decay=True)), TypeError,
                          "weight_decay"),
    "weight_decay_l2_bool": (construct(lambda m: dict(weight_decay=L2Decay(True))), TypeError,
                             "weight_decay"),
    "group_lr_bool": (construct(lambda m: dict(parameters=_groups(m, learning_rate=True))),
                      TypeError, "learning_rate"),
    "group_momentum_bool": (construct(lambda m: dict(parameters=_groups(m, momentum=True))),
                            TypeError, "momentum"),
    "group_rescale_grad_bool": (construct(lambda m: dict(
        parameters=_groups(m, rescale_grad=True))), TypeError, "rescale_grad"),
    "momentum_int_tensor": (construct(lambda m: dict(momentum=paddle.to_tensor(1))), TypeError,
                            "momentum"),
    "use_nesterov_str": (construct(lambda m: dict(use_nesterov="no")), TypeError,
                         "use_nesterov"),
    "use_nesterov_none": (construct(lambda m: dict(use_nesterov=None)), TypeError,
                          "use_nesterov"),
    "multi_precision_str": (construct(lambda m: dict(multi_precision="no")), TypeError,
                            "multi_precision"),
    "use_multi_tensor_two": (construct(lambda m: dict(use_multi_tensor=2)), TypeError,
                             "use_multi_tensor"),
    "group_nesterov_none": (construct(lambda m: dict(parameters=_groups(m, use_nesterov=None))),
                            TypeError, "use_nesterov"),
    "parameters_int_tensor": (construct(lambda m: dict(
        parameters=[paddle.to_tensor([1, 2], stop_gradient=False)])), TypeError, "parameters"),
    "parameters_duplicate": (construct(lambda m: dict(parameters=[m.weight, m.weight])),
                             ValueError, "parameters"),
    "group_unknown_key": (construct(lambda m: dict(parameters=_groups(m, betas=0.9))),
                          ValueError, "betas"),
    "group_multi_precision_key": (construct(lambda m: dict(
        parameters=_groups(m, multi_precision=True))), ValueError, "multi_precision"),
    "state_dict_master_weights_int": (loading(lambda s: dict(s, master_weights=3)), TypeError,
                                      "master_weights"),
    "state_dict_mapping_proxy": (loading(types.MappingProxyType), TypeError, "dict"),
    # ours takes what the built-in refuses
    "lr_tensor": (construct(lambda m: dict(learning_rate=paddle.to_tensor(0.1))), None, ""),
    "group_params_generator": (construct(lambda m: dict(
        parameters=[{"params": (p for p in m.parameters())}])), None, ""),
    "group_nesterov_int": (construct(lambda m: dict(parameters=_groups(m, use_nesterov=1))),
                           None, ""),
    "group_nesterov_np_bool": (construct(lambda m: dict(
        parameters=_groups(m, use_nesterov=np.bool_(True)))), None, ""),
    # both raise, ours not the built-in's type: the built-in crashes (SystemError)
    "momentum_shape_1_tensor": (construct(lambda m: dict(momentum=paddle.to_tensor([0.9]))),
                                TypeError, "momentum"),
    "group_momentum_shape_1_tensor": (construct(lambda m: dict(
        parameters=_groups(m, momentum=paddle.to_tensor([0.9])))), TypeError, "momentum"),
}


@pytest.mark.parametrize("row", list(DEPARTURES))
def test_documented_departure(row):
    attempt, our_type, fragment = DEPARTURES[row]
    assert f"`{row}`" in DIFFERENCES.read_text(), f"{row} is not in docs/differences.md"
    builtin, ours = attempt(BUILTIN), attempt(Momentum)
    if our_type is None:
        assert builtin.error is not None, f"{row}: the built-in accepts this now"
        assert ours.error is None, f"{row}: ours raises {ours.error!r}"
        return
    assert ours.error is not None and ours.stage == "call", f"{row}: ours: {ours}"
    assert isinstance(ours.error, our_type) and fragment in str(ours.error), repr(ours.error)
    assert ours.unchanged, f"{row}: ours changed the parameters, the arguments or its state"
    assert builtin.error is None or not isinstance(ours.error, type(builtin.error)), (
        f"{row}: the built-in raises {type(builtin.error).__name__} now, as ours: move the row "
        "to BAD_INPUTS")


def test_failing_clip_in_second_group_updates_nothing():
    """Paddle has no float64 clip_by_norm CPU kernel. The built-in has already updated the
    first group when the second group's clip raises; ours clips everything first."""
    paddle.set_default_dtype("float64")
    try:
        model = _linear()
    finally:
        paddle.set_default_dtype("float32")
    groups = [{"params": [model.weight]},
              {"params": [model.bias], "grad_clip": paddle.nn.ClipGradByNorm(0.1)}]
    opt = Momentum(0.1, parameters=groups)
    model(paddle.ones([1, 3], dtype="float64")).sum().backward()
    before = [p.numpy().copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="clip_by_norm"):
        opt.step()
    for i, (a, p) in enumerate(zip(before, model.parameters())):
        assert_same(a, p.numpy(), f"param {i}")


def test_low_precision_warning_matches_builtin():
    messages = []
    for cls in (paddle.optimizer.Momentum, Momentum):
        param = paddle.create_parameter([2], dtype="float16")
        (param.astype("float32") * 1.0).sum().backward()
        with pytest.warns(UserWarning) as record:
            try:
                cls(0.1, parameters=[param]).step()
            except RuntimeError:  # the built-in has no float16 CPU kernel after warning
                pass
        messages.append([str(w.message) for w in record if "FP16/BF16" in str(w.message)])
    assert messages[0] and messages[0] == messages[1]


def test_bad_master_weights_in_state_dict_change_nothing():
    param = paddle.create_parameter([3, 2], dtype="float16")
    (param.astype("float32") * 2).sum().backward()
    opt = Momentum(0.1, parameters=[param], multi_precision=True)
    opt.step()
    state = opt.state_dict()
    master = opt._master_weights[param.name]
    before = master.numpy().copy()
    bad = dict(state, master_weights={param.name: paddle.zeros([5], dtype="float32")})
    with pytest.raises(ValueError, match="master_weights"):
        opt.set_state_dict(bad)
    assert opt._master_weights[param.name] is master
    assert_same(before, master.numpy(), "master weight")
