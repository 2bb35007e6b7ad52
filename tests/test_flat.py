"""The fused kernel's flat buckets under everything that can break their views.

Each scenario trains the built-in and ours (``kernel='fused'``) side by side, applies the same
disruption to both between steps, and compares every parameter after every step, bitwise.
Every gradient-clearing mode (zero, release, ``Layer.clear_gradients``) runs in each.
"""

import functools
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import paddle_momentum
from harness import assert_same
from paddle_momentum import _flat, _kernel, _layout, _state


class Model(paddle.nn.Layer):
    """A large layer (its own zero-copy bucket), small ones (one gathered bucket) and a branch
    that is used only on some steps."""

    def __init__(self):
        super().__init__()
        self.big = paddle.nn.Linear(320, 256)  # 81,920 weights >= OWN_BUFFER_SIZE
        self.small = paddle.nn.Linear(256, 4)
        self.branch = paddle.nn.Linear(256, 4)

    def forward(self, x, use_branch=True):
        hidden = paddle.nn.functional.relu(self.big(x))
        out = self.small(hidden)
        return out + self.branch(hidden) if use_branch else out


def _model():
    paddle.seed(11)
    return Model()


def _replace_storage(model, _):
    for param in model.parameters():  # same values, new allocation
        paddle.to_tensor(param.numpy())._share_buffer_to(param)


def _freeze_small(model, _):
    model.small.weight.stop_gradient = True


def _reload_state(model, optimizer):
    state = {k: (v.clone() if isinstance(v, paddle.Tensor) else v)
             for k, v in optimizer.state_dict().items()}
    optimizer.set_state_dict(state)


SCENARIOS = {
    "plain": {},
    "replace_storage": {2: _replace_storage},
    "freeze_a_parameter": {2: _freeze_small},
    "reload_state_dict": {1: _reload_state, 3: _reload_state},
}


CLEARS = {
    "zero": lambda model, optimizer: optimizer.clear_grad(),
    "release": lambda model, optimizer: optimizer.clear_grad(set_to_zero=False),
    "layer": lambda model, optimizer: model.clear_gradients(),
}


def _train(kind, disruptions, clear, steps=6):
    model = _model()
    if kind == "builtin":
        optimizer = paddle.optimizer.Momentum(0.05, 0.9, parameters=model.parameters(),
                                              weight_decay=1e-3, use_nesterov=True)
    else:
        optimizer = paddle_momentum.Momentum(0.05, 0.9, parameters=model.parameters(),
                                             weight_decay=1e-3, use_nesterov=True,
                                             kernel="fused")
    rng = np.random.default_rng(0)
    snapshots = []
    for step in range(steps):
        if step in disruptions:
            disruptions[step](model, optimizer)
        x = paddle.to_tensor(rng.standard_normal((8, 320)).astype("float32"))
        model(x, use_branch=step % 3 != 1).square().mean().backward()
        optimizer.step()
        CLEARS[clear](model, optimizer)
        snapshots.append([p.numpy().copy() for p in model.parameters()])
    return snapshots, optimizer


def _buckets(optimizer):
    return [b for group in optimizer._flat.buckets_of_group.values() for b in group]


@pytest.fixture(params=["table", "none"])
def gradient_path(request, monkeypatch):
    """Buckets take their gradients as a gradient table (the default where it builds, which it
    must here); without it ("none") there are no buckets: each parameter is updated by its
    own fused call, in place."""
    if request.param == "table":
        assert _kernel.gradient_table() is not None, "the gradient table did not build"
    else:
        monkeypatch.setattr(_kernel, "gradient_table", lambda: None)
    return request.param


@pytest.mark.parametrize("clear", list(CLEARS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fused_buckets_match_builtin(scenario, clear, gradient_path):
    reference, _ = _train("builtin", SCENARIOS[scenario], clear)
    ours, optimizer = _train("ours", SCENARIOS[scenario], clear)
    for step, (expected, actual) in enumerate(zip(reference, ours)):
        for i, (a, b) in enumerate(zip(expected, actual)):
            assert_same(a, b, f"step {step} param {i}")
    if gradient_path == "none":
        assert _buckets(optimizer) == []
        return
    (bucket,) = _buckets(optimizer)  # one update setting: one bucket
    assert bucket.table is not None
    sizes = [int(buffer.size) for buffer in bucket.velocity_buffers]
    assert sizes[0] == sum(int(p.size) for p in bucket.params if p.size < _flat.OWN_BUFFER_SIZE)
    large = bucket.params[-1]
    assert large.size >= _flat.OWN_BUFFER_SIZE
    assert bucket.velocity_buffers[-1] is optimizer._get_accumulator_master(
        optimizer._velocity_acc_str, large), "the large weight's state keeps its own storage"


@pytest.mark.parametrize("clear", list(CLEARS))
def test_training_loop_updates_buckets_whole(clear, monkeypatch, gradient_path):
    """backward -> step -> clear, any clearing mode: after the first step (which builds the
    bucket) every step is one kernel call for the bucket, no per-parameter update."""
    per_parameter = []
    monkeypatch.setattr(_state.State, "update",
                        lambda self, param, *_: per_parameter.append(param.name))
    model = _model()
    optimizer = paddle_momentum.Momentum(0.05, 0.9, parameters=model.parameters(),
                                         kernel="fused")
    for step in range(4):
        model(paddle.ones([2, 320])).mean().backward()
        optimizer.step()
        CLEARS[clear](model, optimizer)
    if gradient_path == "none":  # no buckets: each parameter by its own fused call
        assert _buckets(optimizer) == [] and len(per_parameter) == 4 * len(model.parameters())
        return
    assert per_parameter == []
    assert len(_buckets(optimizer)) == 1


def test_parameters_and_state_are_views_of_the_buffers(gradient_path):
    """Small members' velocities are views of their bucket's buffers, in member order; the
    parameters never move (without the gradient table there are no buckets at all)."""
    model = _model()
    before = [p.data_ptr() for p in model.parameters()]
    optimizer = paddle_momentum.Momentum(0.05, 0.9, parameters=model.parameters(),
                                         kernel="fused")
    for _ in range(2):
        model(paddle.ones([2, 320])).mean().backward()
        optimizer.step()
    moved = [a != p.data_ptr() for a, p in zip(before, model.parameters())]
    assert not any(moved)
    if gradient_path == "none":
        assert _buckets(optimizer) == []
        return
    (bucket,) = _buckets(optimizer)
    velocities = [optimizer._get_accumulator_master(optimizer._velocity_acc_str, p)
                  for p in bucket.params]
    itemsize = 4
    offset = 0
    for param, velocity in zip(bucket.params, velocities):
        if param.size >= _flat.OWN_BUFFER_SIZE:
            continue
        assert velocity.data_ptr() == bucket.velocity_buffers[0].data_ptr() + offset * itemsize
        offset += int(param.size)
    assert offset == int(bucket.velocity_buffers[0].size)


def test_minimize_subset_with_buckets():
    """minimize(parameters=...) updates only those, also once buckets exist."""
    runs = []
    for factory in (paddle.optimizer.Momentum,
                    lambda *a, **k: paddle_momentum.Momentum(*a, kernel="fused", **k)):
        model = _model()
        optimizer = factory(0.05, 0.9, parameters=model.parameters())
        x = paddle.ones([2, 320])
        for step in range(4):
            loss = model(x).mean()
            loss.backward()
            subset = None if step < 2 else [model.small.weight, model.big.bias]
            optimizer.minimize(loss, parameters=subset)
            optimizer.clear_grad()
        runs.append([p.numpy() for p in model.parameters()])
    for i, (a, b) in enumerate(zip(*runs)):
        assert_same(a, b, f"param {i}")


def test_master_weights_reloaded_into_buckets(gradient_path):
    """float16 + multi_precision: replacing the master-weight dict through set_state_dict makes
    the optimizer rebuild its buckets; fused stays equal to the composed reference."""
    runs = []
    for kernel in ("composed", "fused"):
        paddle.seed(2)
        weights = [paddle.create_parameter(shape, "float16") for shape in ([300, 300], [7], [5])]
        optimizer = paddle_momentum.Momentum(0.1, parameters=weights, multi_precision=True,
                                             kernel=kernel)
        for step in range(5):
            sum(w.astype("float32").sum() * (i + 1) for i, w in enumerate(weights)).backward()
            optimizer.step()
            optimizer.clear_grad()
            if step == 2:
                state = optimizer.state_dict()
                state["master_weights"] = {k: v.clone() for k, v in
                                           state["master_weights"].items()}
                for k, v in state["master_weights"].items():
                    v.name = optimizer._master_weights[k].name
                optimizer.set_state_dict(state)
        runs.append([w.astype("float32").numpy() for w in weights])
    for i, (a, b) in enumerate(zip(*runs)):
        assert_same(a, b, f"weight {i}")


_THREADS_SCRIPT = """
import numpy as np, paddle, paddle_momentum
rng = np.random.default_rng(0)
shapes = [[100_003], [517, 301], [9]]  # odd sizes: the threads' shares end mid-vector
inits = [rng.standard_normal(s).astype("float32") for s in shapes]
grads = [[rng.standard_normal(s).astype("float32") for s in shapes] for _ in range(3)]
runs = []
for make in (paddle.optimizer.Momentum,
             lambda **k: paddle_momentum.Momentum(kernel="fused", **k)):
    weights = [paddle.create_parameter(
        s, "float32", default_initializer=paddle.nn.initializer.Assign(v))
        for s, v in zip(shapes, inits)]
    optimizer = make(learning_rate=0.1, momentum=0.9, parameters=weights,
                     weight_decay=1e-3, use_nesterov=True)
    for step_grads in grads:
        sum((w * paddle.to_tensor(g)).sum() for w, g in zip(weights, step_grads)).backward()
        optimizer.step()
        optimizer.clear_grad()
    runs.append([w.numpy() for w in weights])
for i, (a, b) in enumerate(zip(*runs)):
    assert np.array_equal(a, b), f"weight {i} differs"
print("equal")
"""


@pytest.mark.parametrize("threads", ["1", "3"])
def test_thread_count_changes_no_bit(threads):
    """The kernel splits the elements among PADDLE_MOMENTUM_NUM_THREADS threads (default: the
    CPUs available); any split, even uneven or over-subscribed, gives the built-in's bits."""
    env = {**os.environ, "PADDLE_MOMENTUM_NUM_THREADS": threads}
    result = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "equal" in result.stdout, result.stderr[-3000:]


def test_bad_gradient_in_a_bucket_changes_nothing(gradient_path):
    """A bucket member whose gradient does not fit it (here: 16 elements for 4) sends the
    bucket to the checked per-parameter path: step() raises before writing anything, in every
    bucket (the built-in updates with such a gradient silently)."""
    params = [paddle.create_parameter([4], dtype) for dtype in ("float32",) * 3 + ("float64",) * 2]
    optimizer = paddle_momentum.Momentum(0.1, 0.9, parameters=params, kernel="fused")
    for _ in range(2):
        sum((p * 2).sum() for p in params).backward()
        optimizer.step()
    assert len(_buckets(optimizer)) == (2 if gradient_path == "table" else 0)

    def velocity_of(param):
        return optimizer._get_accumulator_master(optimizer._velocity_acc_str, param)

    before = [(p.numpy().copy(), velocity_of(p).numpy().copy()) for p in params]
    params[1]._copy_gradient_from(paddle.ones([16]))
    with pytest.raises(ValueError, match=params[1].name):
        optimizer.step()
    for p, (value, velocity) in zip(params, before):
        assert_same(value, p.numpy(), p.name)
        assert_same(velocity, velocity_of(p).numpy(), p.name)


GRADIENT_OPS = {
    "value_clip": dict(grad_clip=paddle.nn.ClipGradByValue(0.01)),
    "l1": dict(weight_decay=paddle.regularizer.L1Decay(0.003)),
    "value_clip_and_l1": dict(grad_clip=paddle.nn.ClipGradByValue(0.02, -0.005),
                              weight_decay=paddle.regularizer.L1Decay(0.1)),
    "global_norm": dict(grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0)),
    "global_norm_not_reached": dict(grad_clip=paddle.nn.ClipGradByGlobalNorm(1e6)),
    "global_norm_auto_skip": dict(grad_clip=paddle.nn.ClipGradByGlobalNorm(
        1.0, auto_skip_clip=True)),
    "global_norm_and_l1": dict(grad_clip=paddle.nn.ClipGradByGlobalNorm(0.5),
                               weight_decay=paddle.regularizer.L1Decay(0.01)),
    "global_norm_and_l2": dict(grad_clip=paddle.nn.ClipGradByGlobalNorm(0.5),
                               weight_decay=0.01),
    "norm": dict(grad_clip=paddle.nn.ClipGradByNorm(0.1)),
    "norm_and_l1": dict(grad_clip=paddle.nn.ClipGradByNorm(0.1),
                        weight_decay=paddle.regularizer.L1Decay(0.01)),
}
NORM_CLIPS = [name for name in GRADIENT_OPS if "norm" in name]

# Parameter sizes: one large member (own storage), the rest gathered in one buffer.
SIZES = (5, 7, 9, 4, 70000, 11, 4, 6)


def _gradient_ops_run(kind, dtype, options, changes=None, sizes=SIZES, special=True):
    """Parameters of ``sizes`` elements (0: 0-d; ``dtype`` may be a list, one per
    parameter), starting with zeros, -0, inf and a denormal, gradients (``special``: with
    NaN and -0); ``changes[step](params, optimizer)`` between steps. Returns, after each
    step, the parameters and the gradients (the built-in clips some in place), and the
    optimizer."""
    rng = np.random.default_rng(0)
    dtypes = dtype if isinstance(dtype, list) else [dtype] * len(sizes)
    with paddle.utils.unique_name.guard():
        params = [paddle.create_parameter([n] if n else [], d) for n, d in zip(sizes, dtypes)]
    for param in params:
        values = rng.standard_normal(param.shape).astype(param.numpy().dtype)
        if values.size >= 4:
            values[:4] = [0.0, -0.0, np.inf, -1e-40]
        param.set_value(values)
    cls = paddle.optimizer.Momentum if kind == "builtin" else paddle_momentum.Momentum
    optimizer = cls(0.1, 0.9, parameters=params, use_nesterov=True, **options,
                    **({} if kind == "builtin" else {"kernel": kind}))
    history = []
    for step in range(5):
        (changes or {}).get(step, lambda *_: None)(params, optimizer)
        grads = [(rng.standard_normal(p.shape) * 0.05).astype(p.numpy().dtype) for p in params]
        if special:
            grads[0][:3] = [-np.nan if special == "-nan" else np.nan, -0.0, 0.01]
        paddle.add_n([(p * paddle.to_tensor(g)).sum().astype("float32")
                      for p, g in zip(params, grads)]).backward()
        optimizer.step()
        history.append([p.numpy().copy() for p in params] +
                       [p.grad.numpy().copy() for p in params])
        optimizer.clear_grad()
    return history, optimizer


def _fused_ops(bucket):
    """The bucket's last kernel call did gradient ops (the runs here set a clip or an L1
    term): it updated a member with the group's clip or with an L1 term (the flags of its
    table's rows)."""
    has_l1 = (bucket.rows[_layout.TABLE_ROWS["FLAGS"]] & _layout.TABLE_FLAGS["HAS_L1"]) != 0
    return bool(bucket.clipped_updated().any() or (has_l1 & bucket.updated()).any())


def _assert_same_history(reference, ours):
    for step, (expected, actual) in enumerate(zip(reference, ours)):
        half = len(expected) // 2
        for i, (a, b) in enumerate(zip(expected, actual)):
            where = f"parameter {i}" if i < half else f"gradient {i - half}"
            assert_same(a, b, f"step {step} {where}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ops", list(GRADIENT_OPS))
def test_gradient_ops_are_fused_bitwise(ops, dtype):
    """Clips and L1Decay run inside the fused kernel (the buckets carry them), with the
    built-in's bits, in the parameters and in the gradients the built-in clips in place
    (the global norm): sign(NaN) is NaN, sign(-0) is +0, the clip keeps NaN. ClipGradByNorm
    is fused for float32 only: the built-in's float64 clip_by_norm raises, and so do we."""
    options = GRADIENT_OPS[ops]
    if ops.startswith("norm") and dtype == "float64":
        for kind in ("builtin", "fused"):
            with pytest.raises(RuntimeError, match="clip_by_norm"):
                _gradient_ops_run(kind, dtype, options)
        return
    special = ops not in NORM_CLIPS  # (a NaN makes every clipped value NaN)
    reference, _ = _gradient_ops_run("builtin", dtype, options, special=special)
    ours, optimizer = _gradient_ops_run("fused", dtype, options, special=special)
    assert all(_fused_ops(b) for b in _buckets(optimizer)), "the gradient ops are not fused"
    _assert_same_history(reference, ours)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_nan_global_norm_keeps_its_sign(dtype):
    """A gradient with a negative NaN (x86's NaN from 0*inf or inf-inf) makes the global
    norm, and so the factor, that NaN: every clipped gradient, velocity and parameter gets
    its bits, sign included."""
    options = GRADIENT_OPS["global_norm"]
    reference, _ = _gradient_ops_run("builtin", dtype, options, special="-nan")
    ours, _ = _gradient_ops_run("fused", dtype, options, special="-nan")
    assert np.signbit(reference[-1][-1]).all(), "the test lost its negative NaN"
    _assert_same_history(reference, ours)


def test_clip_norm_set_to_another_type_raises_as_paddle_does():
    """ClipGradByNorm.clip_norm changed after construction is passed to Paddle's
    clip_by_norm, which takes a double: a str raises its TypeError, before any write."""
    def odd_clip_norm(params, optimizer):
        optimizer._grad_clip.clip_norm = "0.3"

    for kind in ("builtin", "fused"):
        with pytest.raises(TypeError, match="clip_by_norm"):
            _gradient_ops_run(kind, "float32", dict(grad_clip=paddle.nn.ClipGradByNorm(0.1)),
                              changes={3: odd_clip_norm}, special=False)


@pytest.mark.parametrize("ops", ["global_norm", "global_norm_auto_skip", "norm"])
def test_norm_clips_with_units_and_mixed_dtypes(ops):
    """A global norm summed over buckets of two dtypes and single parameters (0-d ones) in
    the group's order, with the built-in's float64 total; parameters with need_clip False
    left out. (Low precision has no squared_l2_norm CPU kernel in Paddle.) The built-in
    cannot update two dtypes with one optimizer (its learning rate has the first one's):
    the reference is our composed kernel, which runs Paddle's own clip class on every
    gradient (and equals the built-in wherever that runs, see test_parity)."""
    sizes = (5, 0, 70000, 9, 0, 3000, 70001, 4, 6, 2)
    dtypes = ["float32", "float32", "float64", "float64", "float64", "float32", "float32",
              "float32", "float64", "float32"]
    if ops == "norm":
        dtypes = ["float32" if d == "float64" else d for d in dtypes]

    def need_clip_off(params, _):
        params[3].need_clip = False
        params[6].need_clip = False

    run = functools.partial(_gradient_ops_run, dtype=dtypes, options=GRADIENT_OPS[ops],
                            changes={0: need_clip_off}, sizes=sizes, special=False)
    reference, _ = run("composed")
    ours, optimizer = run("fused")
    assert any(_fused_ops(b) for b in _buckets(optimizer)), "the clip is not fused"
    _assert_same_history(reference, ours)


def _flip_need_clip(params, optimizer):
    params[1].need_clip = False


def _narrow_the_clip(params, optimizer):
    optimizer._grad_clip.max = 0.001  # read by the clip at every step


def _scale_the_norms(params, optimizer):
    optimizer._grad_clip.clip_norm = 0.02  # read by the clip at every step


def test_fused_value_clip_follows_need_clip_and_bounds_changed_between_steps():
    options = dict(grad_clip=paddle.nn.ClipGradByValue(0.01))
    changes = {2: _flip_need_clip, 3: _narrow_the_clip}
    reference, _ = _gradient_ops_run("builtin", "float32", options, changes)
    options = dict(grad_clip=paddle.nn.ClipGradByValue(0.01))
    ours, _ = _gradient_ops_run("fused", "float32", options, changes)
    _assert_same_history(reference, ours)


@pytest.mark.parametrize("clip", [paddle.nn.ClipGradByGlobalNorm, paddle.nn.ClipGradByNorm])
def test_fused_norm_clip_follows_need_clip_and_clip_norm_changed_between_steps(clip):
    changes = {2: _flip_need_clip, 3: _scale_the_norms}
    reference, _ = _gradient_ops_run("builtin", "float32", dict(grad_clip=clip(0.5)), changes,
                                     special=False)
    ours, _ = _gradient_ops_run("fused", "float32", dict(grad_clip=clip(0.5)), changes,
                                special=False)
    _assert_same_history(reference, ours)


def _first_step_velocities(cls):
    with paddle.utils.unique_name.guard():
        params = [paddle.create_parameter([3, 2] if i % 2 else [5], "float32")
                  for i in range(6)]
        optimizer = cls(0.1, 0.9, parameters=params)
        paddle.add_n([p.sum() for p in params]).backward()
        optimizer.step()
        next_name = paddle.utils.unique_name.generate("x")
    velocities = [optimizer._accumulators["velocity"][p.name] for p in params]
    described = [(v.name, v.persistable, v.stop_gradient, v.shape, v.dtype, str(v.place),
                  v.is_leaf, type(v), v.numpy().tolist()) for v in velocities]
    return described, next_name, optimizer._opti_name_list, optimizer


def test_bucket_velocities_are_made_like_the_builtins():
    """Small bucket members' velocities are born as views of their buffer, with what the
    built-in's _add_accumulator gives them: names (drawn in the same order), persistable,
    stop_gradient, shape, dtype, place, values; the unique-name counter ends the same."""
    *expected, _ = _first_step_velocities(paddle.optimizer.Momentum)
    *actual, optimizer = _first_step_velocities(paddle_momentum.Momentum)
    assert len(_buckets(optimizer)) == 1
    assert actual == expected
