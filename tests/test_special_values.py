"""Signed zeros and NaN signs: ours equals the built-in over a grid of special values.

Every combination of +-0, numbers, denormals, +-inf and NaNs of both signs (distinct payloads)
in the parameter, the gradient and the velocity (loaded through the state dict, so that two
NaNs meet in every addition), for every option of the built-in, float32 and float64, in
dygraph and in static programs, 1-D parameters and 0-d ones; both implementations (the
composed ops of rule.py, and the default, whose kernel is generated from it). Compared bit
for bit, as unsigned integers.
"""

from __future__ import annotations

import itertools

import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

import paddle_momentum
from paddle_momentum import _kernel, _rules

BITS = {"float32": np.uint32, "float64": np.uint64}
OPTIONS = [dict(use_nesterov=nesterov, weight_decay=decay, momentum=mu)
           for nesterov, decay, mu in itertools.product([False, True], [None, 0.01, 0.0],
                                                        [0.9, 0.0])]


def _specials(dtype, small=False):
    nans = np.array([0x7FC00011, 0xFFC00022] if dtype == "float32" else
                    [0x7FF8000000000011, 0xFFF8000000000022], BITS[dtype]).view(dtype)
    tiny = np.finfo(dtype).tiny / 4
    values = [0.0, -0.0, -1.5] if small else \
        [0.0, -0.0, 1.0, -1.5, tiny, -tiny, np.inf, -np.inf, 3e4]
    return np.concatenate([np.array(values, dtype), nans])


def _grid(dtype, small=False):
    values = _specials(dtype, small)
    return [a.ravel().copy() for a in np.meshgrid(values, values, values, indexing="ij")]


def _dygraph(make, dtype, options, zero_d):
    param, grad, velocity = _grid(dtype, small=zero_d)
    with unique_name.guard():
        shapes = [[]] * param.size if zero_d else [[param.size]]
        params = [paddle.create_parameter(shape, dtype) for shape in shapes]
        for p, values in zip(params, np.split(param, len(params))):
            p.set_value(values.reshape(p.shape))
        optimizer = make(0.1, parameters=params, **options)
        optimizer.set_state_dict({f"{p.name}_velocity_0": paddle.to_tensor(
            values.reshape(p.shape)) for p, values in zip(params, np.split(velocity,
                                                                           len(params)))})
        for p, values in zip(params, np.split(grad, len(params))):
            p.grad = paddle.to_tensor(values.reshape(p.shape))
        optimizer.step()
        velocities = optimizer.state_dict()
        return np.concatenate([
            np.concatenate([p.numpy().ravel() for p in params]),
            np.concatenate([velocities[f"{p.name}_velocity_0"].numpy().ravel()
                            for p in params])])


def _static(make, dtype, options, zero_d):
    param, grad, velocity = _grid(dtype, small=zero_d)
    count = param.size if zero_d else 1
    shape = [] if zero_d else [param.size]
    paddle.enable_static()
    default_dtype = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)  # (the learning rate's variable: the built-in needs it)
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with unique_name.guard(), paddle.static.program_guard(main, startup):
            params = [paddle.static.create_parameter(shape, dtype) for _ in range(count)]
            grads = [paddle.static.data(f"g{i}", shape, dtype) for i in range(count)]
            optimizer = make(0.1, **options)
            optimizer.apply_gradients(list(zip(params, grads)))
        executor = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            executor.run(startup)
            by_param = {p.name: optimizer._get_accumulator_master("velocity", p).name
                        for p in params}
            for p, p_values, v_values in zip(params, np.split(param, count),
                                             np.split(velocity, count)):
                scope.find_var(p.name).get_tensor().set(p_values.reshape(shape),
                                                        paddle.CPUPlace())
                scope.find_var(by_param[p.name]).get_tensor().set(v_values.reshape(shape),
                                                                  paddle.CPUPlace())
            feed = {f"g{i}": values.reshape(shape)
                    for i, values in enumerate(np.split(grad, count))}
            executor.run(main, feed=feed)
            fetch = lambda name: np.array(scope.find_var(name).get_tensor()).ravel()  # noqa
            return np.concatenate([np.concatenate([fetch(p.name) for p in params]),
                                   np.concatenate([fetch(by_param[p.name]) for p in params])])
    finally:
        paddle.set_default_dtype(default_dtype)
        paddle.disable_static()


def _ours(kernel):
    return lambda lr, **kw: paddle_momentum.Momentum(lr, kernel=kernel, **kw)


def _assert_same_bits(ours, builtin, dtype):
    differ = np.flatnonzero(ours.view(BITS[dtype]) != builtin.view(BITS[dtype]))
    assert differ.size == 0, (
        f"{differ.size} elements differ, first at {differ[0]}: ours "
        f"{hex(ours.view(BITS[dtype])[differ[0]])}, built-in "
        f"{hex(builtin.view(BITS[dtype])[differ[0]])}")


@pytest.mark.parametrize("kernel", ["composed", "auto"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                    o.items()))
def test_dygraph_special_values_bitwise(options, dtype, kernel):
    builtin = _dygraph(paddle.optimizer.Momentum, dtype, options, zero_d=False)
    _assert_same_bits(_dygraph(_ours(kernel), dtype, options, zero_d=False), builtin, dtype)


@pytest.mark.parametrize("kernel", ["composed", "auto"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", OPTIONS[::3], ids=lambda o: "-".join(
    f"{k}={v}" for k, v in o.items()))
def test_static_special_values_bitwise(options, dtype, kernel):
    builtin = _static(paddle.optimizer.Momentum, dtype, options, zero_d=False)
    _assert_same_bits(_static(_ours(kernel), dtype, options, zero_d=False), builtin, dtype)


@pytest.mark.parametrize("mode", ["dygraph", "static"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_d_parameters_special_values_bitwise(mode, dtype):
    """0-d parameters (static programs give them the composed ops by default)."""
    run = _dygraph if mode == "dygraph" else _static
    for options in (OPTIONS[1], OPTIONS[-2]):  # (momentum 0 plain, L2 0.0 Nesterov)
        builtin = run(paddle.optimizer.Momentum, dtype, options, zero_d=True)
        _assert_same_bits(run(_ours("auto"), dtype, options, zero_d=True), builtin, dtype)


# The gradient ops the kernel generates from rule.py (clip_by_value, l1_decay). Beside the grid,
# parameters whose every element is a NaN and whose gradient is another NaN: Paddle's add_n
# keeps one or the other by the element's position (blocks of four packets, packets, a half
# packet, single elements), so their lengths take every such stretch.
NAN_LENGTHS = (1, 3, 5, 7, 12, 33, 47, 100)
GRADIENT_OPS = {
    "l1": dict(weight_decay=paddle.regularizer.L1Decay(0.25)),
    "negative-l1-nesterov": dict(weight_decay=paddle.regularizer.L1Decay(-0.5),
                                 use_nesterov=True),
    "clip": dict(grad_clip=paddle.nn.ClipGradByValue(1.0, -0.5)),
    "clip-l1": dict(grad_clip=paddle.nn.ClipGradByValue(2.0), momentum=0.0,
                    weight_decay=paddle.regularizer.L1Decay(0.01)),
}


def _gradient_ops_run(make, dtype, options):
    param, grad, velocity = _grid(dtype)
    first_nan, second_nan = _specials(dtype)[-2:]
    pieces = [(param, grad, velocity)] + [
        (np.full(n, first_nan, dtype), np.full(n, second_nan, dtype), np.zeros(n, dtype))
        for n in NAN_LENGTHS]
    with unique_name.guard():
        params = [paddle.create_parameter([p.size], dtype) for p, _, _ in pieces]
        for p, (values, _, _) in zip(params, pieces):
            p.set_value(values)
        optimizer = make(0.1, parameters=params, **options)
        optimizer.set_state_dict({f"{p.name}_velocity_0": paddle.to_tensor(v)
                                  for p, (_, _, v) in zip(params, pieces)})
        for p, (_, g, _) in zip(params, pieces):
            p.grad = paddle.to_tensor(g)
        optimizer.step()
        state = optimizer.state_dict()
        return np.concatenate([p.numpy() for p in params]
                              + [state[f"{p.name}_velocity_0"].numpy() for p in params])


@pytest.mark.parametrize("kernel", ["composed", "auto"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ops", sorted(GRADIENT_OPS))
def test_gradient_ops_special_values_bitwise(ops, dtype, kernel):
    if kernel == "auto":  # (the kernel itself: its self-check would fall back to the composed)
        assert _rules.load() is not None, "the fused kernel fell back"
    builtin = _gradient_ops_run(paddle.optimizer.Momentum, dtype, GRADIENT_OPS[ops])
    _assert_same_bits(_gradient_ops_run(_ours(kernel), dtype, GRADIENT_OPS[ops]), builtin,
                      dtype)
