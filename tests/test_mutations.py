"""Anything a user changes between steps takes effect as in the built-in, bitwise.

The built-in reads its settings at every step (``paddle_momentum._settings`` lists what); the
fast path (flat buckets, the gradient table) caches them, so each cached assumption gets a
mutation here: it is applied to the built-in's and our optimizer alike between two steps, and
every parameter and velocity is compared after every step, on every implementation path
(composed ops; the fused kernel's buckets with and without the gradient table). A mutation
the built-in refuses must raise the built-in's error type on ours too, with nothing written.
"""

import numpy as np
import paddle
import pytest
from paddle.regularizer import L1Decay, L2Decay

import paddle_momentum
from harness import assert_same
from paddle_momentum import _kernel

SHAPES = [[6, 4], [4], [3, 3], [5], [2, 2], [7]]
STEPS = 4
MUTATE_BEFORE = 2  # the buckets exist by then


def _attr(index):
    """Parameter 3 brings an L1Decay, 4 an L2Decay, 5 a learning-rate scale (ParamAttr)."""
    return paddle.ParamAttr(regularizer={3: L1Decay(0.01), 4: L2Decay(0.02)}.get(index),
                            learning_rate=0.5 if index == 5 else 1.0)


def _params(dtype):
    rng = np.random.default_rng(7)
    with paddle.utils.unique_name.guard():
        params = [paddle.create_parameter(shape, dtype, attr=_attr(i))
                  for i, shape in enumerate(SHAPES)]
    for param in params:
        param.set_value(rng.standard_normal(param.shape).astype(dtype))
    return params


# name -> (modes it applies to, function(params, optimizer)). Modes: "plain", "groups".
MUTATIONS = {
    "lr_scale": ("plain groups", lambda ps, opt: ps[0].optimize_attr.update(learning_rate=10.0)),
    "lr_scale_equal_value": ("plain groups",
                             lambda ps, opt: ps[1].optimize_attr.update(learning_rate=float("1"))),
    "lr_scale_of_scaled": ("plain groups",
                           lambda ps, opt: ps[5].optimize_attr.update(learning_rate=3.0)),
    "optimize_attr_replaced": ("plain", lambda ps, opt: setattr(ps[2], "optimize_attr",
                                                                {"learning_rate": 0.25})),
    "l2_regularizer_set": ("plain groups", lambda ps, opt: setattr(ps[1], "regularizer",
                                                                   L2Decay(0.5))),
    "l1_regularizer_set": ("plain groups", lambda ps, opt: setattr(ps[2], "regularizer",
                                                                   L1Decay(0.25))),
    "regularizer_removed": ("plain groups", lambda ps, opt: setattr(ps[4], "regularizer", None)),
    "l2_coeff_in_place": ("plain", lambda ps, opt: setattr(ps[4].regularizer, "_coeff", 0.3)),
    "frozen": ("plain groups", lambda ps, opt: setattr(ps[0], "stop_gradient", True)),
    "main_grad": ("plain groups", lambda ps, opt: setattr(
        ps[2], "main_grad", paddle.full(ps[2].shape, 0.5, ps[2].dtype))),
    "storage_replaced": ("plain groups", lambda ps, opt: paddle.to_tensor(
        ps[1].numpy())._share_buffer_to(ps[1])),
    "optimizer_clip": ("plain", lambda ps, opt: setattr(
        opt, "_grad_clip", paddle.nn.ClipGradByGlobalNorm(0.5))),
    "lr_scale_tensor": ("plain groups", lambda ps, opt: ps[0].optimize_attr.update(
        learning_rate=paddle.to_tensor(0.5))),  # the built-in takes it as the lr itself
    "lr_scale_true": ("plain", lambda ps, opt: ps[1].optimize_attr.update(learning_rate=True)),
    "lr_scale_zero": ("plain groups", lambda ps, opt: ps[1].optimize_attr.update(
        learning_rate=0)),
    "optimizer_fused_coeff": ("plain", lambda ps, opt: setattr(opt, "_regularization_coeff",
                                                               0.5)),
    "group_fused_coeff": ("groups", lambda ps, opt: opt._param_groups[1].update(
        regularization_coeff=0.5)),
    "group_l2_coeff_in_place": ("groups", lambda ps, opt: setattr(
        opt.group_decay, "_coeff", 0.5)),  # the built-in copied it at construction
    "moved_to_other_group": ("groups", lambda ps, opt: (
        opt._param_groups[0]["params"].remove(ps[0]),
        opt._param_groups[1]["params"].append(ps[0]))),
    "listed_twice": ("plain groups", lambda ps, opt: (
        opt._param_groups[-1]["params"] if isinstance(opt._param_groups[0], dict)
        else opt._param_groups).append(ps[1])),
    "main_grad_of_another_shape": ("plain", lambda ps, opt: setattr(
        ps[0], "main_grad", paddle.full([24], 0.5, ps[0].dtype))),
    "main_grad_of_another_dtype": ("plain", lambda ps, opt: setattr(
        ps[0], "main_grad", paddle.full(ps[0].shape, 0.5, "float64"))),
    "velocity_replaced": ("plain groups", lambda ps, opt: [
        opt._accumulators["velocity"].update({p.name: paddle.zeros_like(
            opt._accumulators["velocity"][p.name])}) for p in ps[:3]]),  # a momentum reset
    "optimizer_regularization": ("plain groups", lambda ps, opt: setattr(
        opt, "regularization", L1Decay(0.1))),
    "optimizer_momentum": ("plain", lambda ps, opt: setattr(opt, "_momentum", 0.5)),
    "optimizer_nesterov": ("plain", lambda ps, opt: setattr(opt, "_use_nesterov", True)),
    "group_momentum": ("groups", lambda ps, opt: opt._param_groups[0].update(momentum=0.3)),
    "group_nesterov": ("groups", lambda ps, opt: opt._param_groups[1].update(use_nesterov=True)),
    "group_clip": ("groups", lambda ps, opt: opt._param_groups[1].update(
        grad_clip=paddle.nn.ClipGradByValue(0.05))),
    # The built-in copies a group's learning_rate and weight_decay into its parameters at
    # construction: changing them in the group later changes nothing, on either side.
    "group_learning_rate": ("groups", lambda ps, opt: opt._param_groups[0].update(
        learning_rate=3.0)),
    "group_weight_decay": ("groups", lambda ps, opt: opt._param_groups[0].update(
        weight_decay=0.5)),
}

CASES = [(name, mode) for name, (modes, _) in MUTATIONS.items() for mode in modes.split()]


def _optimizer(kind, params, mode, path):
    group_decay = L2Decay(0.02)
    if mode == "groups":
        parameters = [{"params": params[:3], "momentum": 0.8, "learning_rate": 0.5,
                       "weight_decay": group_decay},
                      {"params": params[3:], "weight_decay": 0.01}]
    else:
        parameters = params
    options = dict(learning_rate=0.1, momentum=0.9, parameters=parameters, weight_decay=0.001)
    if kind == "builtin":
        optimizer = paddle.optimizer.Momentum(**options)
    else:
        optimizer = paddle_momentum.Momentum(kernel=path.split("-")[0], **options)
    optimizer.group_decay = group_decay  # for the mutation that changes it in place
    return optimizer


def _state(params, optimizer):
    arrays = [p.numpy().copy() for p in params]
    for param in params:
        try:
            arrays.append(optimizer._get_accumulator_master("velocity", param).numpy().copy())
        except Exception:  # no velocity yet
            arrays.append(None)
    return arrays


def _train(kind, mode, path, mutation, dtype="float32"):
    """``[(state after each step or the exception raised)]`` of one side."""
    params = _params(dtype)
    with paddle.utils.unique_name.guard():
        optimizer = _optimizer(kind, params, mode, path)
    rng = np.random.default_rng(3)
    history = []
    for step in range(STEPS):
        if step == MUTATE_BEFORE:
            mutation(params, optimizer)
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        loss = paddle.add_n([(p * paddle.to_tensor(g)).sum() for p, g in zip(params, grads)])
        loss.backward()
        before = _state(params, optimizer)
        try:
            optimizer.step()
        except Exception as error:  # compared with the built-in's by the caller
            history.append((error, before, _state(params, optimizer)))
            return history
        optimizer.clear_grad()
        history.append(_state(params, optimizer))
    return history


@pytest.fixture(params=["composed", "fused", "fused-list"])
def path(request, monkeypatch):
    """The implementation path; ``fused-list``: buckets without the gradient table."""
    if request.param == "fused-list":
        monkeypatch.setattr(_kernel, "gradient_table", lambda: None)
    return request.param


def _assert_histories_equal(expected, actual, what):
    assert len(expected) == len(actual), f"{what}: {len(expected)} steps vs {len(actual)}"
    for step, (ref, ours) in enumerate(zip(expected, actual)):
        if isinstance(ref, tuple):  # the built-in raised
            assert isinstance(ours, tuple), f"{what}: step {step}: built-in raised {ref[0]!r}"
            assert isinstance(ours[0], type(ref[0])), f"{what}: {ours[0]!r} vs {ref[0]!r}"
            for i, (before, after) in enumerate(zip(ours[1], ours[2])):
                assert_same(before, after, f"{what}: failed step wrote tensor {i}")
            continue
        assert not isinstance(ours, tuple), f"{what}: step {step}: ours raised {ours[0]!r}"
        for i, (a, b) in enumerate(zip(ref, ours)):
            assert_same(a, b, f"{what}: step {step} tensor {i}")


@pytest.mark.parametrize("name, mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_mutation_between_steps_matches_builtin(name, mode, path):
    mutation = MUTATIONS[name][1]
    _assert_histories_equal(_train("builtin", mode, path, mutation),
                            _train("ours", mode, path, mutation), f"{name}/{mode}/{path}")


def _overwrite_with_float32(params, optimizer):
    paddle.assign(paddle.ones(params[1].shape, "float32"), output=params[1])


@pytest.mark.parametrize("mode", ["plain", "groups"])
def test_float64_parameter_overwritten_with_float32_raises_before_writing(mode, path):
    """The built-in raises ValueError from its kernel (after earlier parameters moved); ours
    raises ValueError before anything is written."""
    reference = _train("builtin", mode, path, _overwrite_with_float32, "float64")
    ours = _train("ours", mode, path, _overwrite_with_float32, "float64")
    assert isinstance(reference[-1], tuple) and isinstance(reference[-1][0], ValueError)
    _assert_histories_equal(reference, ours, f"dtype/{mode}/{path}")


def test_non_contiguous_leaf_is_updated(path):
    """A strided view used as a parameter (``x.T``) is updated in place, as by the built-in."""
    results = []
    for kind in ("builtin", "ours"):
        base = paddle.to_tensor(np.arange(12, dtype="float32").reshape(3, 4))
        weight = base.T
        weight.stop_gradient = False
        assert not weight.is_contiguous()
        optimizer = _optimizer(kind, [weight], "plain", path)
        for step in range(3):
            (weight * paddle.to_tensor(np.full([4, 3], step + 1.0, "float32"))).sum().backward()
            optimizer.step()
            optimizer.clear_grad()
        results.append((weight.numpy().copy(), base.numpy().copy()))
    assert_same(results[0][0], results[1][0], "the view")
    assert_same(results[0][1], results[1][1], "the tensor it views")


def test_parameter_appended_to_the_list_is_updated(path):
    """The built-in iterates its parameter list at every step; so do we."""
    results = []
    for kind in ("builtin", "ours"):
        params = _params("float32")
        extra = params.pop()
        optimizer = _optimizer(kind, params, "plain", path)
        for step in range(3):
            if step == 1:
                optimizer._param_groups.append(extra)
            paddle.add_n([(p * (step + 1.0)).sum() for p in params + [extra]]).backward()
            optimizer.step()
            optimizer.clear_grad()
        results.append([p.numpy().copy() for p in params + [extra]])
    for i, (a, b) in enumerate(zip(*results)):
        assert_same(a, b, f"parameter {i}")


@pytest.mark.parametrize("kernel", ["composed", "fused"])
def test_multi_precision_switched_off_raises_before_writing(kernel):
    """float16 parameters (the built-in has no CPU kernel for them, so ours is compared with
    itself): turning ``_multi_precision`` off after the master weights exist raises
    ValueError on every path, before anything is written (it used to be ignored by buckets)."""
    params = [paddle.create_parameter([8], "float16") for _ in range(8)]
    optimizer = paddle_momentum.Momentum(0.1, 0.9, parameters=params, multi_precision=True,
                                         kernel=kernel)
    for _ in range(2):
        paddle.add_n([p.astype("float32").sum() for p in params]).backward()
        optimizer.step()
    tensors = params + [optimizer._get_accumulator_master("velocity", p) for p in params] \
        + [optimizer._master_weights[p.name] for p in params]
    before = [t.numpy().copy() for t in tensors]
    optimizer._multi_precision = False
    with pytest.raises(ValueError, match="master weight"):
        optimizer.step()
    for i, (tensor, value) in enumerate(zip(tensors, before)):
        assert_same(value, tensor.numpy(), f"tensor {i}")
