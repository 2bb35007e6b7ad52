"""Side-by-side training of the built-in Momentum and ours, for the differential tests.

A ``Case`` names one configuration. ``run_side_by_side`` builds two identical models from the
same seed, trains one with ``paddle.optimizer.Momentum`` and one with
``paddle_momentum.Momentum`` on the same batches, and after every step yields both models'
parameters and velocities as numpy arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import paddle

import paddle_momentum

BUILTIN_LIMITS = {
    # The built-in's use_multi_tensor rejects float64 (momentum-parity.md section 9); its
    # per-parameter mode is bitwise identical there, so it is the reference for those cases.
    "multi_tensor_float64": "per-parameter built-in is the reference",
    # Built-in dygraph minimize() raises with parameter groups; step() is the reference.
    "minimize_groups": "built-in step() is the reference",
}


@dataclasses.dataclass(frozen=True)
class Case:
    dtype: str = "float32"
    nesterov: bool = False
    decay: str = "none"  # none | float | L2 | L1
    clip: str = "none"  # none | value | norm | global
    lr: str = "float"  # float | tensor | step | cosine | warmup
    groups: str = "none"  # none | two | mixed
    param_attr: str = "none"  # none | l2 | l1 | lr
    rescale: float = 1.0
    multi_tensor: bool = False
    api: str = "step"  # step | minimize
    clear: str = "zero"  # zero | none | zero_grad | accumulate
    mode: str = "dygraph"  # dygraph | pir | legacy
    kernel: str = "auto"  # ours: auto | fused | composed
    steps: int = 10

    @property
    def id(self) -> str:
        defaults = Case()
        parts = [self.dtype]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "dtype" and value != getattr(defaults, field.name):
                parts.append(f"{field.name}={value}")
        return "-".join(parts)


def _weight_decay(kind):
    return {
        "none": None,
        "float": 0.01,
        "L2": paddle.regularizer.L2Decay(0.02),
        "L1": paddle.regularizer.L1Decay(0.01),
    }[kind]


def _grad_clip(kind):
    return {
        "none": None,
        "value": paddle.nn.ClipGradByValue(0.05),
        "norm": paddle.nn.ClipGradByNorm(0.1),
        "global": paddle.nn.ClipGradByGlobalNorm(0.2),
    }[kind]


def _learning_rate(kind):
    """A fresh learning rate of the given kind (each optimizer needs its own scheduler)."""
    if kind == "float":
        return 0.1
    if kind == "tensor":
        return paddle.to_tensor(0.1, dtype="float32")
    if kind == "step":
        return paddle.optimizer.lr.StepDecay(0.1, step_size=3, gamma=0.5)
    if kind == "cosine":
        return paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=7)
    if kind == "warmup":
        return paddle.optimizer.lr.LinearWarmup(0.1, warmup_steps=4, start_lr=0.01, end_lr=0.1)
    raise ValueError(kind)


def _param_attr(kind):
    return {
        "none": None,
        "l2": paddle.ParamAttr(regularizer=paddle.regularizer.L2Decay(0.05)),
        "l1": paddle.ParamAttr(regularizer=paddle.regularizer.L1Decay(0.05)),
        "lr": paddle.ParamAttr(learning_rate=0.3),
    }[kind]


class Net(paddle.nn.Layer):
    """Three linear layers; the last bias is frozen and ``spare`` never gets a gradient."""

    def __init__(self, param_attr):
        super().__init__()
        self.first = paddle.nn.Linear(6, 5, weight_attr=param_attr)
        self.second = paddle.nn.Linear(5, 4)
        self.third = paddle.nn.Linear(4, 3)
        self.third.bias.stop_gradient = True
        self.spare = self.create_parameter([2, 2])

    def forward(self, x):
        # ReLU: paddle.tanh does not build under the legacy IR in Paddle 3.3.1
        relu = paddle.nn.functional.relu
        return self.third(relu(self.second(relu(self.first(x)))))


def build_model(case, seed=2024):
    previous = paddle.get_default_dtype()
    paddle.set_default_dtype(case.dtype)
    try:
        paddle.seed(seed)
        return Net(_param_attr(case.param_attr))
    finally:
        paddle.set_default_dtype(previous)


def _parameters(case, model):
    if case.groups == "none":
        return model.parameters()
    first = list(model.first.parameters())
    rest = list(model.second.parameters()) + list(model.third.parameters())
    if case.groups == "two":
        return [
            {"params": first, "learning_rate": 0.5, "momentum": 0.8, "weight_decay": 0.02},
            {"params": rest},
        ]
    if case.groups == "mixed":  # model.spare is in no group
        return [
            {"params": first, "use_nesterov": True,
             "grad_clip": paddle.nn.ClipGradByGlobalNorm(0.1)},
            {"params": rest, "grad_clip": None,
             "weight_decay": paddle.regularizer.L1Decay(0.01)},
        ]
    raise ValueError(case.groups)


def make_optimizer(cls, case, model, **overrides):
    kwargs = dict(
        learning_rate=_learning_rate(case.lr),
        momentum=0.9,
        parameters=_parameters(case, model),
        use_nesterov=case.nesterov,
        weight_decay=_weight_decay(case.decay),
        grad_clip=_grad_clip(case.clip),
        rescale_grad=case.rescale,
        use_multi_tensor=case.multi_tensor,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def make_builtin(case, model):
    """The built-in configured like ours, within its limits (see BUILTIN_LIMITS)."""
    overrides = {"rescale_grad": 1.0}  # the dense CPU kernel ignores it; grads are pre-scaled
    lr = _learning_rate(case.lr)
    if isinstance(lr, paddle.Tensor):  # the built-in rejects a Tensor lr; same value as float
        overrides["learning_rate"] = float(lr)
    if case.multi_tensor and case.dtype == "float64":
        overrides["use_multi_tensor"] = False
    return make_optimizer(paddle.optimizer.Momentum, case, model, **overrides)


OPTIMIZERS = {"builtin": make_builtin,
              "ours": lambda case, model: make_optimizer(paddle_momentum.Momentum, case, model,
                                                         kernel=case.kernel)}


def batch_arrays(case, seed=7):
    rng = np.random.default_rng(seed)
    for _ in range(case.steps):
        yield (rng.standard_normal((8, 6)).astype(case.dtype),
               rng.standard_normal((8, 3)).astype(case.dtype))


def batches(case, seed=7):
    for x, y in batch_arrays(case, seed):
        yield paddle.to_tensor(x), paddle.to_tensor(y)


def _train_step(case, step_index, model, optimizer, x, y, grad_scale=1.0, use_minimize=None):
    loss = paddle.mean(paddle.square(model(x) - y))
    loss.backward()
    if grad_scale != 1.0:
        with paddle.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    paddle.assign(p.grad * grad_scale, p.grad)
    if use_minimize:
        optimizer.minimize(loss)
    else:
        optimizer.step()
    if isinstance(optimizer._learning_rate, paddle.optimizer.lr.LRScheduler):
        optimizer._learning_rate.step()
    if case.clear == "zero":
        optimizer.clear_grad()
    elif case.clear == "none":
        optimizer.clear_grad(set_to_zero=False)
    elif case.clear == "zero_grad":
        optimizer.zero_grad()
    elif case.clear == "accumulate":
        if step_index % 2:
            optimizer.clear_grad()
    return loss


def snapshot(model, optimizer):
    """Parameters and velocities (None before a parameter's first update) as numpy arrays."""
    params = [p.numpy().copy() for p in model.parameters()]
    velocities = []
    for p in model.parameters():
        try:
            velocities.append(optimizer._get_accumulator_master("velocity", p).numpy().copy())
        except Exception:  # no velocity yet: the parameter has not been updated
            velocities.append(None)
    return params, velocities


def run_dygraph(case, kind, grad_scale=1.0):
    """Train ``case`` in dygraph with ``kind`` ('builtin' or 'ours'); a snapshot per step."""
    model = build_model(case)
    optimizer = OPTIMIZERS[kind](case, model)
    use_minimize = case.api == "minimize" and (kind == "ours" or case.groups == "none")
    snapshots = []
    for step, (x, y) in enumerate(batches(case)):
        _train_step(case, step, model, optimizer, x, y, grad_scale, use_minimize)
        snapshots.append(snapshot(model, optimizer))
    return snapshots


def run_side_by_side(case):
    """``(step, reference_snapshot, ours_snapshot)`` for every step, in dygraph. The built-in
    gets gradients pre-scaled by ``case.rescale`` (exact for powers of 2), since its dense CPU
    kernel ignores rescale_grad."""
    reference = run_dygraph(case, "builtin", grad_scale=case.rescale)
    ours = run_dygraph(case, "ours")
    return [(step, ref, our) for step, (ref, our) in enumerate(zip(reference, ours))]


def run_static(case, kind):
    """Train ``case`` as a static program under ``case.mode`` ('pir' or 'legacy') with an
    Executor; parameters start from the dygraph model's values. A snapshot per step."""
    from paddle.utils import unique_name

    initial = [p.numpy() for p in build_model(case).parameters()]
    device = paddle.get_device()
    place = paddle.CPUPlace() if device == "cpu" else paddle.CUDAPlace(int(device.split(":")[1]))
    ir_guard = paddle.pir_utils.OldIrGuard() if case.mode == "legacy" else \
        paddle.pir_utils.IrGuard()
    paddle.enable_static()
    try:
        with ir_guard, unique_name.guard(), paddle.static.scope_guard(paddle.static.Scope()):
            main, startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(main, startup):
                model = build_model(case)
                x = paddle.static.data("x", [8, 6], case.dtype)
                y = paddle.static.data("y", [8, 3], case.dtype)
                loss = paddle.mean(paddle.square(model(x) - y))
                optimizer = OPTIMIZERS[kind](case, model)
                optimizer.minimize(loss)
            executor = paddle.static.Executor(place)
            executor.run(startup)
            scope = paddle.static.global_scope()
            params = model.parameters()
            for param, value in zip(params, initial):
                scope.var(param.name).get_tensor().set(value, place)
            velocity_names = []
            for param in params:
                try:
                    velocity_names.append(
                        optimizer._get_accumulator_master("velocity", param).name)
                except Exception:  # no velocity: the parameter gets no gradient
                    velocity_names.append(None)
            scheduler = optimizer._learning_rate
            snapshots = []
            for x_value, y_value in batch_arrays(case):
                executor.run(main, feed={"x": x_value, "y": y_value}, fetch_list=[loss])
                if isinstance(scheduler, paddle.optimizer.lr.LRScheduler):
                    scheduler.step()
                read = lambda name: np.array(scope.find_var(name).get_tensor())  # noqa: E731
                snapshots.append(([read(p.name) for p in params],
                                  [None if n is None else read(n) for n in velocity_names]))
            return snapshots
    finally:
        paddle.disable_static()


def assert_same(expected, actual, where):
    """Bitwise equality (NaNs equal), with the first differing index in the message."""
    assert (expected is None) == (actual is None), f"{where}: one side has no value"
    if expected is None:
        return
    assert expected.dtype == actual.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    if not np.array_equal(expected, actual, equal_nan=True):
        diff = np.argwhere(expected != actual)[0]
        raise AssertionError(
            f"{where}: first difference at {tuple(diff)}: expected "
            f"{expected[tuple(diff)]!r}, got {actual[tuple(diff)]!r}"
        )
