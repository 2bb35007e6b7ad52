"""The differential matrix: ours against the built-in, every parameter and velocity, every step.

A ``Case`` names one configuration (dtype, Nesterov, decay, clip, learning-rate kind, groups,
ParamAttr, rescale_grad, use_multi_tensor, step/minimize, clear_grad mode, execution mode,
kernel). In dygraph, ``paddle_momentum.testing.compare`` trains ours and the built-in on the
case's model and batches and reports every parameter and state tensor (``dygraph_report``);
``run_dygraph``/``run_static`` train one model and return a snapshot of parameters and
velocities after every step (static programs against dygraph and the built-in's static run);
both models start from the same seed and see the same batches. ``matrix_cases()`` is the
matrix the test suite runs, and ``python -m paddle_momentum parity`` runs it on this machine's
devices and prints per case the largest absolute difference, relative difference and distance
in units in the last place (ulp) (``testing.Difference`` defines them), and for a failing case
where the largest is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import textwrap
import warnings

import numpy as np
import paddle

import paddle_momentum
from paddle_momentum import testing

ulp_distance, max_ulp = testing.ulp_distance, testing.max_ulp  # (re-exported: docs/api.md)


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
    """The built-in configured like ours, within its limits: its use_multi_tensor rejects
    float64 (its per-parameter mode, bitwise identical, is the reference there), it rejects a
    Tensor lr (the same value as a float is), and its dense CPU kernel ignores rescale_grad
    (the gradients are pre-scaled instead, see ``comparisons``)."""
    overrides = {"rescale_grad": 1.0}  # the dense CPU kernel ignores it; grads are pre-scaled
    lr = _learning_rate(case.lr)
    if isinstance(lr, paddle.Tensor):  # the built-in rejects a Tensor lr; same value as float
        overrides["learning_rate"] = float(lr)
    if case.multi_tensor and case.dtype == "float64":
        overrides["use_multi_tensor"] = False
    return make_optimizer(paddle.optimizer.Momentum, case, model, **overrides)


# Ours applies rescale_grad on CPU (opted in: by default it ignores it there, as the built-in
# does, tests/test_decisions.py), checked against the built-in given pre-scaled gradients.
OPTIMIZERS = {"builtin": make_builtin,
              "ours": lambda case, model: make_optimizer(paddle_momentum.Momentum, case, model,
                                                         kernel=case.kernel,
                                                         rescale_grad_on_cpu=True)}


def batch_arrays(case, seed=7):
    rng = np.random.default_rng(seed)
    for _ in range(case.steps):
        yield (rng.standard_normal((8, 6)).astype(case.dtype),
               rng.standard_normal((8, 3)).astype(case.dtype))


def batches(case, seed=7):
    for x, y in batch_arrays(case, seed):
        yield paddle.to_tensor(x), paddle.to_tensor(y)


def train_step(case, step_index, model, optimizer, x, y, grad_scale=1.0, use_minimize=None):
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
        if hasattr(optimizer, "zero_grad"):
            optimizer.zero_grad()
        else:  # the built-in before Paddle 3.3 has no zero_grad: what 3.3 defines it as
            optimizer.clear_grad(set_to_zero=False)
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


def uses_minimize(case, builtin):
    """Whether a run of ``case`` calls ``minimize`` (the built-in's fails with parameter
    groups in dygraph: it steps instead)."""
    return case.api == "minimize" and (not builtin or case.groups == "none")


def run_dygraph(case, kind):
    """Train ``case`` in dygraph with ``kind`` ('builtin' or 'ours'); a snapshot per step."""
    model = build_model(case)
    optimizer = OPTIMIZERS[kind](case, model)
    use_minimize = uses_minimize(case, kind == "builtin")
    snapshots = []
    for step, (x, y) in enumerate(batches(case)):
        train_step(case, step, model, optimizer, x, y, 1.0, use_minimize)
        snapshots.append(snapshot(model, optimizer))
    return snapshots


def dygraph_report(case) -> testing.Report:
    """Ours against the built-in on ``case`` in dygraph, through ``testing.compare``: every
    parameter and optimizer-state tensor after every step. The built-in is given what it
    lacks (pre-scaled gradients for rescale_grad, ``step()`` where its ``minimize`` fails
    with groups: see ``make_builtin``)."""
    built = []

    def model():
        built.append(build_model(case))
        return built[-1]

    def factory(kind):
        return lambda parameters: OPTIMIZERS[kind](case, built[-1])

    def step(model, optimizer, batch, index):
        builtin = not isinstance(optimizer, paddle_momentum.Momentum)
        train_step(case, index, model, optimizer, *batch, case.rescale if builtin else 1.0,
                   uses_minimize(case, builtin))

    return testing.compare(factory("ours"), factory("builtin"), model=model,
                           batches=batches(case), step=step)


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


# ------------------------------------------------------------------------------ the matrix
LR_KINDS = ["float", "tensor", "step", "cosine", "warmup"]
STATIC_LR_KINDS = ["float", "step", "cosine", "warmup"]  # a Tensor lr is a dygraph feature
APIS = ["step", "minimize"]
CLEARS = ["zero", "none", "zero_grad", "accumulate"]
DTYPES = ["float32", "float64"]
PARAM_ATTRS = ["none", "l2", "l1", "lr"]
DECAYS = ["none", "float", "L2", "L1"]
CLIPS = ["none", "value", "norm", "global"]


def _cycle(values, index):
    return values[index % len(values)]


def matrix_cases():
    """Every configuration of the differential matrix (without the kernel axis)."""
    cases = []
    # Core grid: dtype x nesterov x decay x clip, with the other axes rotated through.
    # (Paddle has no float64 clip_by_norm kernel on CPU, for the built-in either.)
    grid = itertools.product(DTYPES, [False, True], DECAYS, CLIPS)
    for i, (dtype, nesterov, decay, clip) in enumerate(grid):
        if dtype == "float64" and clip == "norm":
            continue
        cases.append(Case(dtype=dtype, nesterov=nesterov, decay=decay, clip=clip,
                          lr=_cycle(LR_KINDS, i), api=_cycle(APIS, i // 5),
                          clear=_cycle(CLEARS, i // 3), multi_tensor=bool(i % 7 == 3)))
    # Learning-rate kinds x parameter groups.
    for dtype, lr, groups in itertools.product(DTYPES, LR_KINDS, ["none", "two", "mixed"]):
        cases.append(Case(dtype=dtype, lr=lr, groups=groups, decay="float"))
    # ParamAttr regularizer / learning rate against every optimizer-level decay, and groups.
    for dtype, attr, decay, groups in itertools.product(
            DTYPES, ["l2", "l1", "lr"], ["none", "float", "L1"], ["none", "two", "mixed"]):
        cases.append(Case(dtype=dtype, param_attr=attr, decay=decay, groups=groups))
    # rescale_grad: the reference is the built-in fed with grads scaled by the same power of 2
    # (exact), so only where the scaling commutes with everything before the update.
    for dtype, nesterov, decay, rescale in itertools.product(
            DTYPES, [False, True], ["none", "float", "L2"], [0.25, 2.0]):
        cases.append(Case(dtype=dtype, nesterov=nesterov, decay=decay, rescale=rescale))
    # use_multi_tensor x api x clear mode x groups.
    for dtype, api, clear, groups in itertools.product(DTYPES, APIS, CLEARS, ["none", "two"]):
        cases.append(Case(dtype=dtype, multi_tensor=True, api=api, clear=clear, groups=groups,
                          decay="L2", nesterov=True))
    # Static programs under PIR and the legacy IR (no parameter groups there).
    grid = itertools.product(["pir", "legacy"], DTYPES, [False, True], DECAYS, CLIPS)
    for i, (mode, dtype, nesterov, decay, clip) in enumerate(grid):
        if dtype == "float64" and clip == "norm":
            continue
        cases.append(Case(mode=mode, dtype=dtype, nesterov=nesterov, decay=decay, clip=clip,
                          lr=_cycle(STATIC_LR_KINDS, i), param_attr=_cycle(PARAM_ATTRS, i // 5),
                          multi_tensor=bool(i % 3 == 1), rescale=2.0 if i % 11 == 5 else 1.0))
    return cases


def builtin_static_limit(case):
    """Why the built-in cannot be the reference for a static case (None when it can)."""
    if case.mode == "pir" and case.clip == "value":
        return "built-in: ClipGradByValue has no PIR implementation"
    if case.mode == "legacy" and case.clip == "global":
        return "built-in: ClipGradByGlobalNorm fails under the legacy IR"
    if case.rescale != 1.0:
        return "built-in: the dense CPU kernel ignores rescale_grad"
    return None


def static_rounds_attributes(case):
    """True where Paddle's static ops round a float64 case's scalars through float32.

    The static ``scale`` (L1Decay's coefficient, a ParamAttr lr scale) and ``clip`` ops take
    float32 attributes; dygraph applies the same scalars in float64. The built-in differs
    between its own static and dygraph runs there too (measured), and ours static equals the
    built-in static bit for bit.
    """
    return case.dtype == "float64" and (
        "L1" in (case.decay, case.param_attr.upper()) or case.param_attr == "lr"
        or case.clip == "value")


def comparisons(case):
    """``[(what, reference run, ours run, exact)]`` for ``case``: dygraph, ours against the
    built-in (the reference a ``testing.Report``, ours None); static, ours against the
    built-in where it runs, and ours static against ours dygraph (snapshots; exact unless
    ``static_rounds_attributes``)."""
    if case.mode == "dygraph":
        return [("built-in vs ours", dygraph_report(case), None, True)]
    ours = run_static(case, "ours")
    result = [("ours dygraph vs ours static", run_dygraph(case, "ours"), ours,
               not static_rounds_attributes(case))]
    if builtin_static_limit(case) is None:
        result.append(("built-in static vs ours static", run_static(case, "builtin"), ours,
                       True))
    return result


# ------------------------------------------------------------------------------ command line
def available_places():
    """``[(place, None)]`` to run, or ``(place, reason)`` for a place that is skipped: CPU
    always; the GPU only when Paddle has CUDA and computes a canary ``x*2+1`` right."""
    places = [("cpu", None)]
    if not paddle.is_compiled_with_cuda():
        return places + [("gpu", "Paddle is not compiled with CUDA")]
    try:
        x = paddle.to_tensor(np.arange(4, dtype="float32"), place=paddle.CUDAPlace(0))
        ok = np.array_equal((x * 2 + 1).numpy(), np.arange(4, dtype="float32") * 2 + 1)
        return places + [("gpu", None if ok else "CUDA canary x*2+1 gave a wrong answer")]
    except Exception as error:  # no device or no kernels for it
        return places + [("gpu", f"CUDA canary failed: {error}")]


ATTRIBUTE_NOTE = textwrap.fill(
    "* float32 attributes: in float64 static cases with an L1 coefficient, a ParamAttr "
    "learning-rate scale or clip bounds, Paddle's static scale and clip ops round these to "
    "float32 where dygraph keeps float64 (the built-in's static run differs from its dygraph "
    "run the same way), so ours static is not held to ours dygraph bit for bit there: the "
    "note says how far apart the two are. The row's numbers leave that comparison out: they "
    "compare ours static with the built-in's static run where the built-in runs, and are '-' "
    "where it cannot (docs/parity.md).", width=100, subsequent_indent="  ")
FOOTNOTES = {"*": ATTRIBUTE_NOTE}  # mark -> its text, printed wherever the mark is


def _named(run, names):
    """``run_dygraph``/``run_static`` snapshots as ``testing.compare_runs`` takes them: the
    parameters by name, the velocities by the built-in's accumulator names."""
    return [(dict(zip(names, params)),
             {f"{name}_velocity_0": value for name, value in zip(names, velocities)})
            for params, velocities in run]


def parameter_names(case):
    """The names of ``case``'s model parameters, in order, as a fresh program (and
    ``testing.compare``) gives them: "linear_0.w_0", ..."""
    from paddle.utils import unique_name

    with unique_name.guard():
        return [param.name for param in build_model(case).parameters()]


def comparison_reports(case):
    """``[(what, testing.Report, exact)]`` for ``case``: ``comparisons`` as reports (a
    static run's tensors named as ``parameter_names`` and the built-in's velocities)."""
    names = parameter_names(case)
    return [(what, reference if isinstance(reference, testing.Report)
             else testing.compare_runs(_named(reference, names), _named(ours, names)), exact)
            for what, reference, ours, exact in comparisons(case)]


def _measure(value):
    """A row's number: 3 significant digits ('-': nothing compared)."""
    if value is None:
        return "-"
    return testing._number(value)


def parity_row(case, place, allowed_ulp=0):
    """``(passed, row, details)`` for ``case`` on ``place`` (the current device: the caller
    sets it): the row (kernel, place, PASS or FAIL, the largest absolute and relative
    difference and ulp over the case's exact comparisons, the case, notes) and the lines
    printed under it (an error's message). A case fails where an exact comparison is more
    than ``allowed_ulp`` apart, or raises."""
    exact, notes, details = [], [], []
    try:
        for what, report, is_exact in comparison_reports(case):
            if is_exact:
                exact.append((what, report))
            elif report.max_ulp or report.max_abs:
                notes.append(f"float32 attributes*: {what} differ by "
                             f"{_measure(report.max_abs)} absolute, "
                             f"{_measure(report.max_rel)} relative")
        measures = [max((getattr(report, name) for _, report in exact), default=None)
                    for name in ("max_abs", "max_rel", "max_ulp")]
        passed = measures[2] is None or measures[2] <= allowed_ulp
        if not passed:  # (where: the comparison with the most ulp, its largest abs)
            what, report = max(exact, key=lambda item: (item[1].max_ulp, item[1].max_abs))
            worst = report.worst
            notes.insert(0, f"{what}: largest absolute in {worst.name} {worst.at_max_abs}"
                         + (f", {worst.values}" if worst.values else ""))
    except Exception as error:  # reported as a failing case, its message under the row
        measures, passed, notes = [None] * 3, False, ["raised, see below"]
        details = [f"    {type(error).__name__}: {' '.join(str(error).split())}"[:300]]
    row = (f"{case.kernel:8s} {place:5s} {'PASS' if passed else 'FAIL':6s} "
           + "  ".join(f"{_measure(value):>8s}" for value in measures)
           + f"  {dataclasses.replace(case, kernel=Case.kernel).id}"  # (kernel: its column)
           + (f"  ({'; '.join(notes)})" if notes else ""))
    return passed, row, details


def run_parity(kernels=("composed", "fused"), every=1, out=print, gpu_ulp=0, summary=False):
    """Run the matrix (every ``every``-th case) for each kernel on each available place;
    print a table (``summary``: only the failing rows) and a total; return the number of
    failing cases. A row gives the largest absolute and relative difference and ulp over
    the case's exact comparisons (``testing.Difference`` defines them), a failing row where
    its largest absolute difference is; every footnote mark printed has its footnote printed
    (before the rows, or before the total in summary mode)."""
    cases = matrix_cases()[::every]
    failures, total, noted = 0, 0, 0
    printed = []

    def emit(line):
        printed.append(line)
        out(line)

    header = (f"{'kernel':8s} {'place':5s} {'result':6s} {'max abs':>8s}  {'max rel':>8s}  "
              f"{'max ulp':>8s}  case")
    if not summary:
        if any(static_rounds_attributes(case) for case in cases if case.mode != "dygraph"):
            emit(ATTRIBUTE_NOTE)  # (before the rows it explains)
        emit(header)
    for place, skip in available_places():
        if skip:
            emit(f"(skipping {place}: {skip})")
            continue
        previous = paddle.get_device()
        paddle.set_device(place)
        try:
            for base_case, kernel in itertools.product(cases, kernels):
                case = dataclasses.replace(base_case, kernel=kernel)
                passed, row, details = parity_row(case, place, 0 if place == "cpu" else gpu_ulp)
                failures += not passed
                total += 1
                noted += passed and "attributes*" in row
                if passed and summary:
                    continue
                if summary and failures == 1:
                    emit(header)  # (summary: above the first failing row only)
                for line in [row] + details:
                    emit(line)
        finally:
            paddle.set_device(previous)
    result = (f"{total} cases: {total - failures} pass, {failures} fail"
              + (f" ({noted} passing float64 static cases where Paddle's static ops round "
                 f"attributes to float32*)" if noted else ""))
    for mark, footnote in FOOTNOTES.items():
        if footnote not in printed and any(mark in line for line in printed + [result]):
            emit(footnote)  # (summary mode: the rows that carry the mark are printed)
    emit(result)
    return failures


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m paddle_momentum parity",
        description="Run the differential matrix (ours against paddle.optimizer.Momentum, "
                    "dygraph and static, both kernels) on this machine's CPU and any working "
                    "GPU; print the largest absolute and relative difference and ulp per "
                    "case, and where a failing case differs most. Exit code 0 only when "
                    "every case passes (CPU: 0 ulp).")
    parser.add_argument("--kernel", choices=["composed", "fused"], action="append",
                        help="kernel to check (repeatable; default: both)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="run every N-th case only (a quick check)")
    parser.add_argument("--gpu-ulp", type=int, default=0, metavar="N",
                        help="ulp allowed on a GPU (its kernels may fuse multiply-adds; "
                             "default 0)")
    parser.add_argument("--summary", action="store_true",
                        help="print only the failing cases and the total")
    args = parser.parse_args(argv)
    with _quiet_paddle_loggers():
        failures = run_parity(tuple(args.kernel or ("composed", "fused")), max(1, args.every),
                              gpu_ulp=args.gpu_ulp, summary=args.summary)
    return 0 if failures == 0 else 1


@contextlib.contextmanager
def _quiet_paddle_loggers():
    """Paddle's Python loggers and the root logger (Paddle's optimizer notes ParamAttr
    regularizers through ``logging.info``, for the built-in's and ours alike) at ERROR
    while the table prints, and Paddle's own PIR-backward warning off; restored after."""
    loggers = [logging.root] + [
        logger for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("paddle") and isinstance(logger, logging.Logger)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.ERROR))
    try:
        with warnings.catch_warnings():  # Paddle's PIR backward asks a Value for its place
            warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
