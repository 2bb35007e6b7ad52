"""Bad input: ours raises at construction, with a message naming the argument, an exception of
(a subclass of) the type the built-in raises for the same input, and changes nothing."""

import copy

import numpy as np
import paddle
import pytest

from harness import assert_same
from paddle_momentum import Momentum


def _linear():
    paddle.seed(0)
    return paddle.nn.Linear(3, 2)


def _groups(model, **extra):
    return [dict({"params": [model.weight]}, **extra), {"params": [model.bias]}]


# id -> (kwargs from a model, expected exception type, text the message must contain)
BAD_INPUTS = {
    "lr_none": (lambda m: dict(learning_rate=None), ValueError, "learning_rate"),
    "lr_int": (lambda m: dict(learning_rate=1), TypeError, "learning_rate"),
    "lr_str": (lambda m: dict(learning_rate="0.1"), TypeError, "learning_rate"),
    "lr_np_float32": (lambda m: dict(learning_rate=np.float32(0.1)), TypeError, "learning_rate"),
    "lr_nan": (lambda m: dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    "lr_int_tensor": (lambda m: dict(learning_rate=paddle.to_tensor(1)), TypeError,
                      "learning_rate"),
    "lr_vector_tensor": (lambda m: dict(learning_rate=paddle.to_tensor([0.1, 0.2])), TypeError,
                         "learning_rate"),
    "momentum_none": (lambda m: dict(momentum=None), ValueError, "momentum"),
    "momentum_str": (lambda m: dict(momentum="a"), TypeError, "momentum"),
    "momentum_inf": (lambda m: dict(momentum=float("inf")), ValueError, "momentum"),
    "momentum_nan": (lambda m: dict(momentum=float("nan")), ValueError, "momentum"),
    "momentum_inf": (lambda m: dict(momentum=float("inf")), ValueError, "momentum"),
    "parameters_none": (lambda m: dict(parameters=None), AttributeError, "parameters"),
    "parameters_empty_list": (lambda m: dict(parameters=[]), IndexError, "parameters"),
    "parameters_empty_tuple": (lambda m: dict(parameters=()), IndexError, "parameters"),
    "parameters_single_tensor": (lambda m: dict(parameters=m.weight), TypeError, "parameters"),
    "parameters_dict": (lambda m: dict(parameters={"params": [m.weight]}), TypeError,
                        "parameters"),
    "parameters_floats": (lambda m: dict(parameters=[1.0, 2.0]), AttributeError, "parameters"),
    "parameters_int_tensor": (
        lambda m: dict(parameters=[paddle.to_tensor([1, 2], stop_gradient=False)]), TypeError,
        "parameters"),
    "parameters_duplicate": (lambda m: dict(parameters=[m.weight, m.weight]), ValueError,
                             "parameters"),
    "group_without_params": (lambda m: dict(parameters=[{"learning_rate": 0.1}]),
                             AssertionError, "params"),
    "group_duplicate": (lambda m: dict(parameters=[{"params": [m.weight]},
                                                   {"params": [m.weight, m.bias]}]),
                        ValueError, "parameter group"),
    "group_set": (lambda m: dict(parameters=[{"params": {m.weight}}]), TypeError, "set"),
    "group_unknown_key": (lambda m: dict(parameters=_groups(m, betas=0.9)), ValueError, "betas"),
    "group_nesterov_two": (lambda m: dict(parameters=_groups(m, use_nesterov=2)), TypeError,
                           "use_nesterov"),
    "group_lr_scheduler": (
        lambda m: dict(parameters=_groups(m, learning_rate=paddle.optimizer.lr.StepDecay(0.1, 2))),
        TypeError, "learning_rate"),
    "group_lr_nan": (lambda m: dict(parameters=_groups(m, learning_rate=float("nan"))),
                     ValueError, "learning_rate"),
    "group_lr_inf": (lambda m: dict(parameters=_groups(m, learning_rate=float("inf"))),
                     ValueError, "learning_rate"),
    "group_momentum_nan": (lambda m: dict(parameters=_groups(m, momentum=float("nan"))),
                                ValueError, "momentum"),
    "weight_decay_str": (lambda m: dict(weight_decay="x"), TypeError, "weight_decay"),
    "weight_decay_list": (lambda m: dict(weight_decay=[0.1]), TypeError, "weight_decay"),
    "weight_decay_nan": (lambda m: dict(weight_decay=float("nan")), ValueError, "weight_decay"),
    # one rule for every weight-decay coefficient: finite (the built-in takes all of these)
    "weight_decay_inf": (lambda m: dict(weight_decay=float("inf")), ValueError, "weight_decay"),
    "weight_decay_l2_nan": (lambda m: dict(weight_decay=paddle.regularizer.L2Decay(float("nan"))),
                            ValueError, "weight_decay"),
    "weight_decay_l1_inf": (lambda m: dict(weight_decay=paddle.regularizer.L1Decay(float("inf"))),
                            ValueError, "weight_decay"),
    "weight_decay_float32_overflow": (lambda m: dict(weight_decay=1e39), ValueError,
                                      "weight_decay"),  # (inf as the update's float32)
    "group_weight_decay_inf": (lambda m: dict(parameters=_groups(m, weight_decay=float("-inf"))),
                               ValueError, "weight_decay"),
    # strict bools (the built-in takes any value's truth: "no" turns Nesterov on)
    "use_nesterov_str": (lambda m: dict(use_nesterov="no"), TypeError, "use_nesterov"),
    "multi_precision_str": (lambda m: dict(multi_precision="no"), TypeError, "multi_precision"),
    "use_multi_tensor_two": (lambda m: dict(use_multi_tensor=2), TypeError, "use_multi_tensor"),
    "grad_clip_float": (lambda m: dict(grad_clip=1.0), TypeError, "grad_clip"),
    "grad_clip_str": (lambda m: dict(grad_clip="x"), TypeError, "grad_clip"),
    "group_grad_clip_str": (lambda m: dict(parameters=_groups(m, grad_clip="x")), TypeError,
                            "grad_clip"),
    "group_weight_decay_str": (lambda m: dict(parameters=_groups(m, weight_decay="x")),
                               TypeError, "weight_decay"),
    # the built-in converts an int weight_decay at the top level only ('int' object is not
    # callable at the first step)
    "group_weight_decay_int": (lambda m: dict(parameters=_groups(m, weight_decay=1)),
                               TypeError, "weight_decay"),
    "group_not_a_dict": (lambda m: dict(parameters=[{"params": [m.weight]}, m.bias]), TypeError,
                         "parameters[1]"),
    "rescale_grad_none": (lambda m: dict(rescale_grad=None), TypeError, "rescale_grad"),
    "name_int": (lambda m: dict(name=3), TypeError, "name"),
}


def _builtin_error(kwargs, model):
    """What the built-in raises for the same input, at construction or at its first step."""
    try:
        opt = paddle.optimizer.Momentum(**kwargs)
        model(paddle.ones([1, 3])).sum().backward()
        opt.step()
    except Exception as error:  # the built-in's type is what we compare with
        return error
    return None


def _state(model):
    return [(p.numpy().copy(), repr(p.regularizer), dict(p.optimize_attr))
            for p in model.parameters()]


@pytest.mark.parametrize("row", list(BAD_INPUTS))
def test_bad_input(row):
    make_kwargs, expected_type, fragment = BAD_INPUTS[row]
    model = _linear()
    kwargs = dict(dict(learning_rate=0.1, parameters=model.parameters()), **make_kwargs(model))
    kwargs_before = copy.copy(kwargs)
    before = _state(model)
    with pytest.raises(expected_type) as caught:
        Momentum(**kwargs)
    assert fragment in str(caught.value), str(caught.value)
    assert kwargs == kwargs_before
    for (value, reg, attr), (value2, reg2, attr2) in zip(before, _state(model)):
        assert np.array_equal(value, value2) and reg == reg2 and attr == attr2

    other = _linear()
    builtin_error = _builtin_error(
        dict(learning_rate=0.1, parameters=other.parameters()) | make_kwargs(other), other)
    if builtin_error is not None:
        assert isinstance(caught.value, type(builtin_error)), (
            f"built-in raises {type(builtin_error).__name__}: {builtin_error}")


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


def _trained(cls, scheduler=True):
    model = _linear()
    lr = paddle.optimizer.lr.StepDecay(0.1, step_size=2) if scheduler else 0.1
    opt = cls(lr, parameters=model.parameters())
    model(paddle.ones([1, 3])).sum().backward()
    opt.step()
    return model, opt


def _without(state, key):
    return {k: v for k, v in state.items() if k != key}


# id -> (function of a valid state dict returning a bad one, expected type, message text)
BAD_STATE_DICTS = {
    "not_a_dict": (lambda s: list(s.items()), TypeError, "dict"),
    "missing_velocity": (lambda s: _without(s, next(k for k in s if "velocity" in k)),
                         AssertionError, "not found"),
    "missing_lr_scheduler": (lambda s: _without(s, "LR_Scheduler"), AssertionError,
                             "LR_Scheduler"),
    "wrong_shape": (lambda s: {k: (paddle.zeros([7]) if "w_0_velocity" in k else v)
                               for k, v in s.items()}, ValueError, "shape"),
    "wrong_dtype": (lambda s: {k: (v.astype("float64") if "w_0_velocity" in k else v)
                               for k, v in s.items()}, TypeError, "dtype"),
    "numpy_wrong_shape": (lambda s: {k: (np.zeros((1, 1), "float32") if "velocity" in k
                                         else v) for k, v in s.items()}, ValueError, "shape"),
    "lr_state_not_dict": (lambda s: dict(s, LR_Scheduler=3), TypeError, "LR_Scheduler"),
    # the built-in sets last_epoch, then raises for the missing last_lr
    "lr_state_partial": (lambda s: dict(s, LR_Scheduler={"last_epoch": 7}), RuntimeError,
                         "last_lr"),
}


@pytest.mark.parametrize("row", list(BAD_STATE_DICTS))
def test_bad_state_dict_changes_nothing(row):
    make_bad, expected_type, fragment = BAD_STATE_DICTS[row]
    model, opt = _trained(Momentum)
    good = {k: (v.clone() if isinstance(v, paddle.Tensor) else dict(v))
            for k, v in opt.state_dict().items()}
    before = {k: v.numpy().copy() for k, v in opt.state_dict().items()
              if isinstance(v, paddle.Tensor)}
    opt._learning_rate.step()  # so a (wrongly) applied LR_Scheduler state would show
    before_lr = (opt.get_lr(), opt._learning_rate.last_epoch)
    with pytest.raises(expected_type) as caught:
        opt.set_state_dict(make_bad(good))
    assert fragment in str(caught.value)
    for name, value in before.items():
        assert_same(value, opt.state_dict()[name].numpy(), name)
    assert (opt.get_lr(), opt._learning_rate.last_epoch) == before_lr

    _, builtin = _trained(paddle.optimizer.Momentum)
    try:
        builtin.set_state_dict(make_bad(builtin.state_dict()))
    except Exception as error:  # the built-in's type is what we compare with
        assert isinstance(caught.value, type(error)), f"built-in: {type(error).__name__}"


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
