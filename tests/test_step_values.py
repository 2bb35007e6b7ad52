"""Values that change between steps, and what a step leaves behind, side by side with the
built-in: a value the built-in reads at step time (a learning-rate scale, a clip object or
its bounds, ``need_clip``, ``clip_norm``) flows into the next step without rebuilding the
flat buckets and with the built-in's numbers and errors; a step leaves Paddle's flags and the
parameters' storage as the built-in does; no number crosses into the kernel as text, so the
process locale changes nothing."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

import paddle_momentum
from harness import assert_same

CLIPS = {
    "none": lambda: None,
    "global-norm": lambda: paddle.nn.ClipGradByGlobalNorm(1.0),
    "norm": lambda: paddle.nn.ClipGradByNorm(0.05),
    "value": lambda: paddle.nn.ClipGradByValue(0.02),
}


def _twin_parameters(count=24, size=64, dtype="float32"):
    values = np.random.RandomState(3).standard_normal((count, size)).astype(dtype)
    twins = []
    for _ in range(2):
        params = [paddle.create_parameter([size], dtype) for _ in range(count)]
        for param, value in zip(params, values):
            param.set_value(value)
        twins.append(params)
    return twins


def _backward(params, step):
    paddle.add_n([(p * p * (0.5 + k + step)).sum() for k, p in enumerate(params)]).backward()


def _count_builds(optimizer):
    """Count the optimizer's bucket builds (wraps its dygraph step's ``_build``)."""
    builds = []
    step = optimizer._dygraph_step
    build = step._build
    step._build = lambda *args: (builds.append(1), build(*args))[1]
    return builds


@pytest.mark.parametrize("clip", sorted(CLIPS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_values_changed_every_step_equal_builtin_without_rebuild(clip, dtype):
    """Every step: new learning-rate scales (per parameter, different ones), a new clip
    object, ``need_clip`` toggled on every other parameter."""
    if clip == "norm" and dtype == "float64":
        pytest.skip("Paddle has no float64 clip_by_norm CPU kernel (the built-in raises)")
    builtin_params, our_params = _twin_parameters(dtype=dtype)
    builtin = paddle.optimizer.Momentum(0.1, 0.9, parameters=builtin_params,
                                        weight_decay=1e-4, grad_clip=CLIPS[clip]())
    ours = paddle_momentum.Momentum(0.1, 0.9, parameters=our_params, weight_decay=1e-4,
                                    grad_clip=CLIPS[clip]())
    builds = _count_builds(ours)
    for step in range(5):
        for optimizer, params in ((builtin, builtin_params), (ours, our_params)):
            for index, param in enumerate(params):
                param.optimize_attr["learning_rate"] = (1.0 / (1 + 0.1 * step) if index % 3
                                                        else 0.5 + index / 100)
                param.need_clip = bool((index + step) % 2)
            optimizer._grad_clip = CLIPS[clip]()
            _backward(params, step)
            optimizer.step()
        for index, (expected, actual) in enumerate(zip(builtin_params, our_params)):
            assert_same(expected.numpy(), actual.numpy(), f"step {step} parameter {index}")
            assert_same(expected.grad.numpy(), actual.grad.numpy(),
                        f"step {step} gradient {index}")
        for optimizer in (builtin, ours):
            optimizer.clear_grad()
    assert len(builds) == 1, f"the buckets were built {len(builds)} times"
    assert all(bucket.table is not None for buckets in ours._flat.buckets_of_group.values()
               for bucket in buckets)


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan")])
@pytest.mark.parametrize("kernel", ["auto", "composed"])
def test_invalid_clip_norm_after_the_first_step_raises_as_the_builtin(bad, kernel):
    builtin_params, our_params = _twin_parameters()
    builtin = paddle.optimizer.Momentum(0.1, parameters=builtin_params,
                                        grad_clip=paddle.nn.ClipGradByNorm(0.05))
    ours = paddle_momentum.Momentum(0.1, parameters=our_params, kernel=kernel,
                                    grad_clip=paddle.nn.ClipGradByNorm(0.05))
    for optimizer, params in ((builtin, builtin_params), (ours, our_params)):
        _backward(params, 0)
        optimizer.step()
        optimizer._grad_clip.clip_norm = bad
    before = [p.numpy().copy() for p in our_params]
    for step in range(2):  # at every step, not only the first after the change
        errors = []
        for optimizer in (builtin, ours):
            with pytest.raises(ValueError) as raised:
                optimizer.step()
            errors.append(type(raised.value))
        assert errors[0] is errors[1]
    for expected, param in zip(before, our_params):
        assert_same(expected, param.numpy(), "a parameter after the refused step")


@pytest.mark.parametrize("before", ["eager", "phi"])
def test_a_step_leaves_paddle_flags_as_the_builtin_does(before):
    """Paddle's custom-op runner sets FLAGS_tensor_operants_mode to 'phi' and never resets
    it; Paddle's own eager ops (the built-in's step) leave 'eager'."""
    flag = "FLAGS_tensor_operants_mode"
    builtin_params, our_params = _twin_parameters(count=4)
    builtin = paddle.optimizer.Momentum(0.1, parameters=builtin_params,
                                        grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    ours = paddle_momentum.Momentum(0.1, parameters=our_params,
                                    grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    for step in range(2):
        after = []
        for optimizer, params in ((builtin, builtin_params), (ours, our_params)):
            _backward(params, step)
            paddle.set_flags({flag: before})
            optimizer.step()
            after.append(paddle.get_flags(flag))
            optimizer.clear_grad()
        assert after[1] == after[0], after
    paddle.set_flags({flag: "eager"})


def test_a_group_l1_coefficient_changed_in_place_is_read_as_the_builtin_reads_it():
    builtin_params, our_params = _twin_parameters()
    optimizers = [cls(0.1, 0.9, parameters=[
        dict(params=params, weight_decay=paddle.regularizer.L1Decay(0.01))])
        for cls, params in ((paddle.optimizer.Momentum, builtin_params),
                            (paddle_momentum.Momentum, our_params))]
    for step in range(3):
        for optimizer, params in zip(optimizers, (builtin_params, our_params)):
            _backward(params, step)
            optimizer.step()
            optimizer.clear_grad()
            if step == 0:
                optimizer._param_groups[0]["weight_decay"]._coeff = 0.5
        for index, (expected, actual) in enumerate(zip(builtin_params, our_params)):
            assert_same(expected.numpy(), actual.numpy(), f"step {step} parameter {index}")


@pytest.mark.parametrize("bounds", [(0.5, 0.2), (float("nan"), 0.2), (-0.2, float("nan")),
                                    (None, 0.01), (-0.01, None)])
def test_value_clip_bounds_changed_in_place_act_as_in_the_builtin(bounds):
    """Set after construction: refused (ValueError, nothing written) or applied as Paddle's
    clip applies them (None: no bound)."""
    builtin_params, our_params = _twin_parameters()
    optimizers = [cls(0.1, 0.9, parameters=params, grad_clip=paddle.nn.ClipGradByValue(0.02))
                  for cls, params in ((paddle.optimizer.Momentum, builtin_params),
                                      (paddle_momentum.Momentum, our_params))]
    outcomes = []
    for optimizer, params in zip(optimizers, (builtin_params, our_params)):
        _backward(params, 0)
        optimizer.step()
        optimizer.clear_grad()
        optimizer._grad_clip.min, optimizer._grad_clip.max = bounds
        _backward(params, 1)
        before = [p.numpy().copy() for p in params]
        try:
            optimizer.step()
            outcomes.append(None)
        except ValueError:
            outcomes.append(ValueError)
            for expected, param in zip(before, params):
                assert_same(expected, param.numpy(), "a parameter after the refused step")
    assert outcomes[0] is outcomes[1]
    for index, (expected, actual) in enumerate(zip(builtin_params, our_params)):
        assert_same(expected.numpy(), actual.numpy(), f"parameter {index}")


BIG = 2 ** 60 + 2 ** 36 + 1  # (an int no double holds: Paddle's ops take it as an int64)


@pytest.mark.parametrize("kernel", ["auto", "composed"])
@pytest.mark.parametrize("what", ["l1-int", "l1-tensor-changed-in-place", "clip-int"])
def test_gradient_op_values_taken_as_paddle_takes_them(what, kernel):
    """An L1 coefficient or clip bound as Paddle's scale and clip ops take it: a Tensor's value
    now (changed in place between steps), an int exactly (rounded once, to float32)."""
    runs = []
    for make in (paddle.optimizer.Momentum,
                 lambda *a, **k: paddle_momentum.Momentum(*a, kernel=kernel, **k)):
        params = [paddle.create_parameter([40], "float32") for _ in range(3)]  # (a bucket)
        for param in params:
            param.set_value(np.full(40, 0.0 if what == "clip-int" else 1.0, "float32"))
        coefficient = paddle.to_tensor(0.1) if what == "l1-tensor-changed-in-place" else BIG
        clip = paddle.nn.ClipGradByValue(1.0)
        clip.min, clip.max = -BIG, BIG
        options = ({"grad_clip": clip} if what == "clip-int"
                   else {"weight_decay": paddle.regularizer.L1Decay(coefficient)})
        optimizer = make(1.0, 0.9, parameters=params, **options)
        for step in range(3):
            if step == 1 and what == "l1-tensor-changed-in-place":
                coefficient.set_value(paddle.to_tensor(0.5))
            for param in params:
                param.grad = paddle.full([40], 3e38 if what == "clip-int" else 0.0, "float32")
            optimizer.step()
        runs.append([param.numpy() for param in params])
    for index, (expected, actual) in enumerate(zip(*runs)):
        assert_same(expected, actual, f"{what}: parameter {index}")


_VIEWS = """
import json, os, sys
import numpy as np, paddle, paddle_momentum
assert os.environ["PADDLE_MOMENTUM_GRADIENT_TABLE"] == "0"
assert paddle_momentum._kernel.gradient_table() is None
paddle.seed(0)
params = [paddle.create_parameter([4, 8], "float32") for _ in range(30)]
slice_view, reshaped = params[0][1:], params[1].reshape([32])
exported = np.from_dlpack(params[2].detach())  # shares the parameter's storage
twins = [paddle.create_parameter([4, 8], "float32") for _ in params]
for twin, param in zip(twins, params):
    twin.set_value(param)
ours = paddle_momentum.Momentum(0.1, 0.9, parameters=params)
builtin = paddle.optimizer.Momentum(0.1, 0.9, parameters=twins)
for step in range(3):
    for optimizer, group in ((ours, params), (builtin, twins)):
        paddle.add_n([(p * p).sum() for p in group]).backward()
        optimizer.step()
        optimizer.clear_grad()
print(json.dumps({
    "slice": bool(np.array_equal(slice_view.numpy(), params[0].numpy()[1:])),
    "reshape": bool(np.array_equal(reshaped.numpy(), params[1].numpy().reshape(32))),
    "dlpack": bool(np.array_equal(exported, params[2].numpy())),
    "builtin": bool(all(np.array_equal(p.numpy(), t.numpy()) for p, t in zip(params, twins))),
    "moved": [bool(p.numpy().tolist() == t.numpy().tolist()) for p, t in zip(params, twins)],
}))
"""


def test_views_of_parameters_keep_tracking_without_the_gradient_table(tmp_path):
    """Without the gradient table nothing is gathered into flat buffers: a slice, a
    reshape and a DLPack export of a parameter see its updates, as with the built-in."""
    env = dict(os.environ, PADDLE_MOMENTUM_GRADIENT_TABLE="0")
    done = subprocess.run([sys.executable, "-c", _VIEWS], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert result["builtin"], result
    assert result["slice"] and result["reshape"] and result["dlpack"], result


_LOCALE = """
import ctypes, json, locale
import numpy as np, paddle, paddle_momentum
# (after the imports: Paddle's own protobuf descriptors do not load under such a locale)
locale.setlocale(locale.LC_ALL, "")
libc = ctypes.CDLL(None)
libc.strtod.restype = ctypes.c_double
canary = libc.strtod(b"0.75", None)  # 0.0 where the decimal separator is a comma
result = {"canary": canary}
for name, options in {
    "value": dict(grad_clip=paddle.nn.ClipGradByValue(0.75)),
    "l1": dict(weight_decay=paddle.regularizer.L1Decay(0.25)),
    "norm": dict(grad_clip=paddle.nn.ClipGradByNorm(0.5)),
}.items():
    values = np.random.RandomState(1).standard_normal((20, 16)).astype("float32")
    runs = []
    for cls in (paddle.optimizer.Momentum, paddle_momentum.Momentum):
        params = [paddle.create_parameter([16], "float32") for _ in values]
        for p, v in zip(params, values):
            p.set_value(v)
        optimizer = cls(0.1, 0.9, parameters=params, **options)
        for step in range(3):
            paddle.add_n([(p * p * 3).sum() for p in params]).backward()
            optimizer.step()
            optimizer.clear_grad()
        runs.append(np.stack([p.numpy() for p in params]))
    result[name] = bool(np.array_equal(runs[0], runs[1]))
print(json.dumps(result))
"""


def test_a_decimal_comma_locale_changes_nothing(tmp_path):
    """A program that adopts a German locale (``setlocale(LC_ALL, "")``): clip bounds and
    coefficients reach the kernel as bits, so the numbers stay the built-in's."""
    locales = tmp_path / "locales"
    locales.mkdir()
    made = subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8",
                           str(locales / "de_DE.UTF-8")], capture_output=True, text=True)
    assert made.returncode in (0, 1), made.stderr  # 1: made, with warnings
    env = dict(os.environ, LOCPATH=str(locales), LANG="de_DE.UTF-8", LC_ALL="de_DE.UTF-8")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_LOCALE)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert result["canary"] == 0.0, "the locale did not take: the test would prove nothing"
    assert result["value"] and result["l1"] and result["norm"], result


def _torch_options_run(kernel, dtype, clip, multi_precision):
    """Two groups; after two steps one switches dampening on, the other maximize."""
    values = np.random.RandomState(1).standard_normal((12, 37)).astype("float32")
    params = [paddle.create_parameter([37], dtype) for _ in values]
    for param, value in zip(params, values):
        param.set_value(value.astype(dtype))
    optimizer = paddle_momentum.Momentum(
        0.1, 0.9, kernel=kernel, grad_clip=clip, multi_precision=multi_precision,
        parameters=[dict(params=params[:6], decoupled_weight_decay=0.05),
                    dict(params=params[6:])])
    for step in range(5):
        if step == 2:
            optimizer._param_groups[0]["dampening"] = 0.3
            optimizer._param_groups[1]["maximize"] = True
        paddle.add_n([(p.astype("float32") ** 2 * (k + 1 + step)).sum()
                      for k, p in enumerate(params)]).backward()
        optimizer.step()
        optimizer.clear_grad()
    return [p.astype("float32").numpy() for p in params]


@pytest.mark.parametrize("dtype,multi_precision", [("float32", False), ("float64", False),
                                                   ("float16", True), ("float16", False)])
@pytest.mark.parametrize("clip", ["none", "global-norm"])
# (float16 without master weights, on purpose: the built-in's warning, which ours gives too)
@pytest.mark.filterwarnings(
    r"ignore:Accumulating with FP16/BF16:UserWarning:paddle_momentum\._state$")
def test_torch_options_switched_on_between_steps_fused_equals_composed(dtype, multi_precision,
                                                                       clip):
    """The torch options are values of each step: switched on after the buckets were built,
    the default (their fused loops, or the composed ops for low precision) gives the composed
    ops' bits."""
    if dtype == "float16" and clip != "none":
        pytest.skip("Paddle has no float16 squared_l2_norm on CPU (the built-in fails too)")
    fused, composed = (_torch_options_run(kernel, dtype, CLIPS[clip](), multi_precision)
                       for kernel in ("auto", "composed"))
    for index, (expected, actual) in enumerate(zip(composed, fused)):
        assert_same(expected, actual, f"parameter {index}")


# What a user changes between steps (issue 28's table), each applied alike to both optimizers
# before ``step`` (``change(optimizer, params, step)``), with the number of bucket builds it
# may cost ours: none beyond the first but where memory changes.
def _decay_schedule(optimizer, params, step):
    optimizer._regularization_coeff = 1e-4 * (1 + step)


def _clip_toggled(optimizer, params, step):
    optimizer._grad_clip = paddle.nn.ClipGradByGlobalNorm(0.5) if step % 2 else None


def _frozen_layer(optimizer, params, step):
    for param in params[:8]:
        param.stop_gradient = step % 2 == 1


def _regularizers_replaced(optimizer, params, step):
    for index, param in enumerate(params[:8]):
        param.regularizer = (paddle.regularizer.L2Decay(1e-3 * (1 + step)) if index % 2
                             else paddle.regularizer.L1Decay(1e-3 * (1 + step)))


def _coefficients_scheduled(optimizer, params, step):
    """One L2Decay shared by a layer and one L1Decay by another, their coefficients changed
    in place every step (the built-in reads ``_coeff`` at every step)."""
    if step == 0:
        l2, l1 = paddle.regularizer.L2Decay(1e-3), paddle.regularizer.L1Decay(1e-3)
        for index, param in enumerate(params[:8]):
            param.regularizer = l2 if index < 4 else l1
    for param in params[:8]:
        param.regularizer._coeff = 1e-3 * (1 + step)


def _coefficient_to_float16(optimizer, params, step):
    """An L2Decay's coefficient set in place to ``np.float16(0.1)``, equal to 0.1 under
    numpy's comparison rules but 0.0999755859375 to the built-in's arithmetic."""
    if step == 0:
        for param in params[:8]:
            param.regularizer = paddle.regularizer.L2Decay(0.1)
    if step == 2:
        params[0].regularizer._coeff = np.float16(0.1)


def _unused_layer(optimizer, params, step):
    for param in params[8:16]:
        param.clear_gradient(False)


def _late_layer(optimizer, params, step):
    """A layer used from the third step on (no state before: the step then builds the
    buckets again, once, with it)."""
    if step < 2:
        _unused_layer(optimizer, params, step)


def _velocity_storage_replaced(optimizer, params, step):
    """A momentum reset the way a user may write it: new storage under the same tensor."""
    if step == 2:
        velocity = optimizer._accumulators[next(iter(optimizer._accumulators))][params[3].name]
        paddle.full(velocity.shape, 0.5, velocity.dtype)._share_buffer_to(velocity)


def _zero_signs(optimizer, params, step):
    """The momentum and the decay coefficient set to 0.0, then -0.0, with gradients of -0.0:
    ``v * mu + g`` and ``p * c + g`` then keep the sign the built-in's product gives (equal
    under ``==``, the two zeros are different settings)."""
    if step >= 2:
        optimizer._momentum = -0.0 if step == 3 else 0.0
        optimizer._regularization_coeff = -0.0 if step == 4 else 0.0
        for param in params[:6]:
            param.grad.set_value(paddle.full_like(param.grad, -0.0))


def _minimize_some(optimizer, params, step):
    optimizer.minimize(params[0], parameters=params[4:20] if step % 2 else params[:10])


CHANGES = {  # name -> (change, bucket builds it may cost: the first one included)
    "decay_schedule": (_decay_schedule, 1),
    "clip_toggled": (_clip_toggled, 1),
    "frozen_layer": (_frozen_layer, 1),
    "regularizers_replaced": (_regularizers_replaced, 1),
    "coefficients_scheduled": (_coefficients_scheduled, 1),
    "coefficient_to_float16": (_coefficient_to_float16, 1),
    "unused_layer": (_unused_layer, 1),
    "late_layer": (_late_layer, 2),
    "velocity_storage_replaced": (_velocity_storage_replaced, 2),
    "minimize_some": (_minimize_some, 2),  # (the first build takes the first list only)
    "zero_signs": (_zero_signs, 1),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_changes_between_steps_equal_builtin(change):
    """Each change of issue 28's table, made before every step: the built-in's numbers
    (parameters and velocities, bit for bit) and no bucket rebuilt but where memory moved."""
    apply_change, allowed_builds = CHANGES[change]
    builtin_params, our_params = _twin_parameters()
    builtin = paddle.optimizer.Momentum(0.1, 0.9, parameters=builtin_params,
                                        weight_decay=1e-4)
    ours = paddle_momentum.Momentum(0.1, 0.9, parameters=our_params, weight_decay=1e-4)
    builds = _count_builds(ours)
    for step in range(5):
        for optimizer, params in ((builtin, builtin_params), (ours, our_params)):
            optimizer.clear_grad()
            _backward(params, step)
            apply_change(optimizer, params, step)
            if change != "minimize_some":
                optimizer.step()
        for index, (expected, actual) in enumerate(zip(builtin_params, our_params)):
            assert_same(expected.numpy(), actual.numpy(), f"step {step} parameter {index}")
    for index, (expected, actual) in enumerate(zip(builtin_params, our_params)):
        velocities = [optimizer._accumulators["velocity"].get(param.name)
                      for optimizer, param in ((builtin, expected), (ours, actual))]
        assert (velocities[0] is None) == (velocities[1] is None), f"velocity {index}"
        if velocities[0] is not None:
            assert_same(velocities[0].numpy(), velocities[1].numpy(), f"velocity {index}")
    assert 1 <= len(builds) <= allowed_builds, f"the buckets were built {len(builds)} times"
    assert any(ours._flat.buckets_of_group.values()), "no bucket"


def test_a_first_step_that_fails_in_its_clip_leaves_no_state():
    """float16 with a global-norm clip: Paddle has no float16 squared_l2_norm on CPU, so the
    built-in's step raises in the clip, before it makes any state; so does ours (a bucket's
    state is made when the step reaches the state, not when the bucket is built)."""
    states = []
    for cls in (paddle.optimizer.Momentum, paddle_momentum.Momentum):
        params = [paddle.create_parameter([64], "float32"),
                  paddle.create_parameter([64], "float16")]
        optimizer = cls(0.1, 0.9, parameters=params, multi_precision=True,
                        grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
        paddle.add_n([(p.astype("float32") * 2).sum() for p in params]).backward()
        with pytest.raises(RuntimeError):
            optimizer.step()
        states.append(sorted(optimizer.state_dict()))
    assert states[1] == states[0]


def _tensor_coefficient_run(cls, change, **options):
    """One parameter of zeros with its own ``L2Decay`` of a Tensor coefficient, momentum
    -0.0 and gradients of -0.0 (so a zero's sign shows in the velocity): the coefficient
    changed in place (``set_value``) or replaced by another Tensor between steps."""
    param = paddle.create_parameter([6], "float32")
    param.set_value(np.array([0.0, -0.0, 1.0, -1.0, 0.5, -2.0], "float32"))
    coefficient = paddle.to_tensor(0.0)
    param.regularizer = paddle.regularizer.L2Decay(coefficient)
    optimizer = cls(0.1, -0.0, parameters=[param], **options)
    snapshots = []
    for step in range(4):
        if step == 1 and change == "in place":
            coefficient.set_value(paddle.to_tensor(0.25))
        if step == 1 and change == "replaced":
            param.regularizer._coeff = paddle.to_tensor(-0.0)
        (param * paddle.full([6], -0.0)).sum().backward()
        optimizer.step()
        optimizer.clear_grad()
        snapshots.append((param.numpy(), optimizer._accumulators["velocity"][param.name].numpy()))
    return snapshots


@pytest.mark.parametrize("kernel", ["auto", "composed"])
@pytest.mark.parametrize("change", ["in place", "replaced"])
def test_a_tensor_coefficient_is_read_at_every_step(change, kernel):
    """A parameter's L2Decay of a Tensor coefficient: its value now (changed in place), and
    the Tensor now (another one, of -0.0 where it was 0.0), as the built-in reads them."""
    expected = _tensor_coefficient_run(paddle.optimizer.Momentum, change)
    actual = _tensor_coefficient_run(paddle_momentum.Momentum, change, kernel=kernel)
    for step, (want, got) in enumerate(zip(expected, actual)):
        assert_same(want[0], got[0], f"step {step} parameter")
        assert_same(want[1], got[1], f"step {step} velocity")


def test_a_group_learning_rate_tensor_is_the_learning_rate():
    """A group's ``learning_rate`` given as a 0-d Tensor is, to the built-in, that group's
    learning rate itself (not a scale of the optimizer's), read at every step."""
    runs = []
    for cls in (paddle.optimizer.Momentum, paddle_momentum.Momentum):
        builtin_params, _ = _twin_parameters(count=4)
        rate = paddle.to_tensor(0.5)
        optimizer = cls(0.1, 0.9, parameters=[{"params": builtin_params[:2],
                                                "learning_rate": rate},
                                               {"params": builtin_params[2:]}])
        for step in range(3):
            if step == 2:
                rate.set_value(paddle.to_tensor(0.25))
            _backward(builtin_params, step)
            optimizer.step()
            optimizer.clear_grad()
        runs.append([p.numpy() for p in builtin_params])
    for index, (want, got) in enumerate(zip(*runs)):
        assert_same(want, got, f"parameter {index}")
