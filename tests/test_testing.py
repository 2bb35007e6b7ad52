"""paddle_momentum.testing: the parity kit for users' suites, diffed against the built-in."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

import paddle_momentum
from paddle_momentum import rule, testing


def _mlp():
    return paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.Tanh(), paddle.nn.Linear(8, 2))


BATCHES = [paddle.to_tensor(np.random.default_rng(i).standard_normal((4, 6)), "float32")
           for i in range(4)]


def _loss(model, x):
    return model(x).square().mean()


def _settings(cls, **extra):
    return lambda params: cls(0.1, 0.9, parameters=params, use_nesterov=True,
                              weight_decay=1e-3, **extra)


@pytest.mark.parametrize("kernel", ["auto", "composed"])
def test_ours_against_the_builtin_is_zero_ulp(kernel):
    report = testing.compare(_settings(paddle_momentum.Momentum, kernel=kernel),
                             _settings(paddle.optimizer.Momentum), model=_mlp,
                             batches=BATCHES, loss=_loss, place="cpu")
    report.assert_equal()
    kinds = [d.kind for d in report.differences]
    assert kinds.count("parameter") == 4 and kinds.count("state") >= 4  # (velocities)
    assert report.max_ulp == 0 and report.steps == 4


def test_catches_an_edited_rule(monkeypatch):
    """A rule that keeps 0.999 of the new velocity: the report names the velocities and the
    parameters, from the second step on (the first velocity is the same: it starts at 0,
    then only the kept share differs)."""
    original = rule.momentum_update

    def edited(*args, **kwargs):
        new_param, new_velocity = original(*args, **kwargs)
        return new_param, new_velocity * 0.999

    monkeypatch.setattr(rule, "momentum_update", edited)
    report = testing.compare(_settings(paddle_momentum.Momentum, kernel="composed"),
                             _settings(paddle.optimizer.Momentum), model=_mlp,
                             batches=BATCHES, loss=_loss)
    assert report.max_ulp > 0
    states = [d for d in report.differences if d.kind == "state" and "velocity" in d.name]
    assert states and all(d.ulp > 0 and d.first_step == 1 for d in states)
    with pytest.raises(AssertionError, match="velocity"):
        report.assert_equal()


def test_default_reference_and_missing_state():
    """The default reference is the built-in Momentum(0.1, 0.9); a state tensor only one side
    has counts as a difference (inf)."""
    report = testing.compare(lambda params: paddle.optimizer.SGD(0.1, parameters=params),
                             model=_mlp, batches=BATCHES[:2], loss=_loss)
    assert report.max_ulp == float("inf")
    assert any(d.kind == "state" and d.ulp == float("inf") for d in report.differences)


def test_ulp_distance_of_special_values():
    one = np.float32([1.0])
    assert testing.ulp_distance(one, np.nextafter(one, np.float32(2))) == 1
    assert testing.ulp_distance(np.float64([0.0]), np.float64([-0.0])) == 0
    assert testing.ulp_distance(np.float32([np.nan]), one) == float("inf")


def test_likely_mistakes_are_named():
    ours = _settings(paddle_momentum.Momentum)
    with pytest.raises(ValueError, match="batches is empty"):
        testing.compare(ours, model=_mlp, batches=[], loss=_loss)
    with pytest.raises(TypeError, match="model must be a factory"):
        testing.compare(ours, model=_mlp(), batches=BATCHES, loss=_loss)
    with pytest.raises(TypeError, match="factory returned NoneType"):
        testing.compare(lambda params: None, model=_mlp, batches=BATCHES, loss=_loss)


def test_own_step_and_bitwise():
    """A step of one's own; assert_equal(bitwise=True) counts what ulp does not (zero signs):
    here the run under test leaves -0.0 where the reference leaves +0.0."""
    def step(model, optimizer, batch, index):
        model(batch).sum().backward()
        optimizer.step()
        optimizer.clear_grad()
        zero = -0.0 if isinstance(optimizer, paddle_momentum.Momentum) else 0.0
        model.bias.set_value(paddle.full_like(model.bias, zero))  # (-t would be +0: scale op)

    report = testing.compare(lambda params: paddle_momentum.Momentum(0.1, 0.9, parameters=params),
                             model=lambda: paddle.nn.Linear(2, 2),
                             batches=[paddle.ones([1, 2])] * 2, step=step)
    report.assert_equal()
    with pytest.raises(AssertionError, match="b_0"):
        report.assert_equal(bitwise=True)
    with pytest.raises(TypeError, match="loss"):
        testing.compare(lambda params: paddle_momentum.Momentum(0.1, parameters=params),
                        model=lambda: paddle.nn.Linear(2, 2), batches=[paddle.ones([1, 2])])


def test_state_created_later_counts_and_the_generator_is_left_as_found():
    """A run that only accumulates at its first step creates its state at the second: that
    state is compared too (a renamed velocity is reported, not skipped); Paddle's random
    generator is as it was before compare."""
    class Renamed(paddle_momentum.Momentum):
        def state_dict(self):
            return {key.replace("_velocity_", "_vel_"): value
                    for key, value in super().state_dict().items()}

    def accumulate(model, optimizer, batch, index):
        model(batch).square().mean().backward()
        if index % 2 == 1:
            optimizer.step()
            optimizer.clear_grad()

    paddle.seed(1234)
    state = paddle.get_rng_state()
    expected = paddle.randn([2]).numpy()
    paddle.set_rng_state(state)
    report = testing.compare(lambda params: Renamed(0.1, 0.9, parameters=params),
                             model=lambda: paddle.nn.Linear(8, 2),
                             batches=[paddle.ones([4, 8]) * i for i in range(1, 5)],
                             step=accumulate)
    assert report.max_ulp == float("inf")
    assert {d.name for d in report.differences if d.kind == "state"} >= {
        "linear_0.w_0_velocity_0", "linear_0.w_0_vel_0"}
    np.testing.assert_array_equal(paddle.randn([2]).numpy(), expected)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_ulps_of_16_bit_floats(dtype):
    one = paddle.to_tensor([1.0, -2.0], dtype=dtype)
    after = paddle.to_tensor([1.0 + (2 ** -10 if dtype == "float16" else 2 ** -7),
                              -2.0 - (2 ** -9 if dtype == "float16" else 2 ** -6)], dtype=dtype)
    assert testing.ulp_distance(one.numpy(), after.numpy()) == 1
    assert testing.ulp_distance(one.numpy(), one.numpy()) == 0
