"""What the built-in accepts, ours accepts with the same numbers; what it takes silently but
mishandles is refused with a short message; the likely mistakes get short messages that name
the argument."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_momentum


def _train(cls, steps=3, between=None, **kwargs):
    paddle.seed(1)
    model = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.Tanh(), paddle.nn.Linear(4, 2))
    groups = kwargs.pop("groups", None)
    parameters = groups(model) if groups else model.parameters()
    optimizer = cls(0.1, parameters=parameters, **kwargs)
    for step in range(steps):
        model(paddle.ones([2, 3])).square().mean().backward()
        optimizer.step()
        optimizer.clear_grad()
        if between is not None:
            between(optimizer, step)
    return [p.numpy().tobytes() for p in model.parameters()]


def _frozen_first_layer(lr):
    return lambda model: [{"params": model[0].parameters(), "learning_rate": lr},
                          {"params": model[2].parameters()}]


ACCEPTED = {
    "momentum: a 0-d float32 Tensor": lambda: dict(momentum=paddle.to_tensor(0.9)),
    "momentum: a 0-d float64 Tensor": lambda: dict(momentum=paddle.to_tensor(0.5, "float64")),
    "momentum: numpy float32": lambda: dict(momentum=np.float32(0.9)),
    "momentum: negative": lambda: dict(momentum=-0.5),
    "use_nesterov: the int 1": lambda: dict(use_nesterov=1),
    "use_nesterov: the int 0": lambda: dict(use_nesterov=0),
    "use_nesterov: a numpy bool": lambda: dict(use_nesterov=np.bool_(True)),
    "multi_precision: the int 1": lambda: dict(multi_precision=1),
    "use_multi_tensor: the int 1": lambda: dict(use_multi_tensor=1),
    "rescale_grad: inf (the dense CPU kernel ignores it)": lambda: dict(
        rescale_grad=float("inf")),
    "rescale_grad: nan": lambda: dict(rescale_grad=float("nan")),
    "group learning_rate 0.0 (frozen)": lambda: dict(groups=_frozen_first_layer(0.0)),
    "group learning_rate -1.0": lambda: dict(groups=_frozen_first_layer(-1.0)),
    "group momentum: a 0-d Tensor": lambda: dict(groups=lambda model: [
        {"params": model[0].parameters(), "momentum": paddle.to_tensor(0.5)},
        {"params": model[2].parameters()}]),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_as_the_builtin_with_its_numbers(case):
    assert _train(paddle_momentum.Momentum, **ACCEPTED[case]()) == \
        _train(paddle.optimizer.Momentum, **ACCEPTED[case]())


def _nesterov_groups(value):
    return lambda model: [{"params": model[0].parameters(), "use_nesterov": value},
                          {"params": model[2].parameters()}]


# what ours takes where the built-in raises (docs/differences.md) -> the input the built-in
# takes for it: ours given the first trains as the built-in given the second
ACCEPTED_WHERE_THE_BUILTIN_RAISES = {
    "group use_nesterov: the int 1": (dict(groups=_nesterov_groups(1)),
                                      dict(groups=_nesterov_groups(True))),
    "group use_nesterov: the int 0": (dict(groups=_nesterov_groups(0)),
                                      dict(groups=_nesterov_groups(False))),
    "group use_nesterov: a numpy bool": (dict(groups=_nesterov_groups(np.bool_(True))),
                                         dict(groups=_nesterov_groups(True))),
    "first group's params: a generator": (
        dict(groups=lambda model: [{"params": (p for p in model.parameters())}]),
        dict(groups=lambda model: [{"params": model.parameters()}])),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED_WHERE_THE_BUILTIN_RAISES))
def test_accepted_where_the_builtin_raises(case):
    ours, builtin_form = ACCEPTED_WHERE_THE_BUILTIN_RAISES[case]
    with pytest.raises(Exception):  # (tests/test_errors.py checks its type is still what
        _train(paddle.optimizer.Momentum, steps=1, **ours)  # docs/differences.md says)
    assert _train(paddle_momentum.Momentum, **ours) == \
        _train(paddle.optimizer.Momentum, **builtin_form)


def test_tensor_momentum_changed_in_place_between_steps():
    """The built-in reads its momentum Tensor at every step: so do we."""
    def change(optimizer, step):
        paddle.assign(paddle.to_tensor(0.5 - 0.1 * step), output=optimizer._momentum)
    runs = [_train(cls, 4, between=change, momentum=paddle.to_tensor(0.9))
            for cls in (paddle.optimizer.Momentum, paddle_momentum.Momentum)]
    assert runs[0] == runs[1]
    assert runs[1] != _train(paddle_momentum.Momentum, 4, momentum=paddle.to_tensor(0.9))


@pytest.mark.parametrize("value", ["no", 2, "True"])
def test_bool_flag_the_builtin_takes_silently_is_refused(value):
    """The built-in takes ``bool(value)``: 'no' turns Nesterov on (listed in
    docs/differences.md)."""
    with pytest.raises(TypeError, match="use_nesterov must be a bool"):
        paddle_momentum.Momentum(0.1, parameters=paddle.nn.Linear(2, 2).parameters(),
                                 use_nesterov=value)


def _message(call):
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    return str(caught.value)


def test_likely_mistakes_have_short_messages_naming_the_argument():
    model = paddle.vision.models.resnet18()
    positional = _message(lambda: paddle_momentum.Momentum(model.parameters()))
    assert len(positional) < 300 and "learning_rate" in positional and \
        "parameters=" in positional and \
        f"a list of {len(model.parameters())} Parameters" in positional, positional
    named = _message(lambda: paddle_momentum.Momentum(
        0.1, parameters=model.named_parameters()))
    assert len(named) < 300 and "parameters[0]" in named and "model.parameters()" in named, named
    tensor = _message(lambda: paddle_momentum.Momentum(
        0.1, parameters=model.parameters(), momentum=paddle.ones([3, 3])))
    assert len(tensor) < 200 and "momentum" in tensor and "[3, 3]" in tensor, tensor
    for message in (positional, named, tensor):
        assert "Tensor(shape" not in message and "[[" not in message


def test_a_layer_given_as_parameters_says_to_pass_its_parameters():
    layer = paddle.nn.Linear(2, 2)
    for given in (layer, [{"params": layer}]):
        message = _message(lambda: paddle_momentum.Momentum(0.1, parameters=given))
        assert len(message) < 200 and ".parameters()" in message and "Linear" in message
