"""What the benchmark runs (``python -m paddle_momentum bench``, ``tools.bench``): the candidate
optimizers and the workloads, each workload's parameter shapes, its steppers (one optimizer
step of each candidate on its own copy of the same parameters and gradients) and what it
changes before each step. How they are timed, measured and reported is ``tools.bench``'s."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import paddle

import paddle_momentum

HYPERPARAMETERS = {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
SEED = 0

Stepper = Callable[[], object]
# (optimizer, parameters, step index): a workload's untimed change before each step.
BeforeStep = Callable[[paddle.optimizer.Optimizer, List[paddle.Tensor], int], object]
TakeStep = Callable[[paddle.optimizer.Optimizer, List[paddle.Tensor]], object]


# --------------------------------------------------------------------------------- candidates
@dataclasses.dataclass(frozen=True)
class Candidate:
    """An optimizer under test: a label and a factory taking the parameter list (None in a
    static program) and returning the optimizer, built with :data:`HYPERPARAMETERS`."""

    label: str
    make: Callable[..., paddle.optimizer.Optimizer]  # (parameters, **option overrides)


def _builtin(**options) -> Callable[..., paddle.optimizer.Optimizer]:
    def make(parameters, **overrides):
        return paddle.optimizer.Momentum(parameters=parameters,
                                         **{**HYPERPARAMETERS, **overrides}, **options)
    return make


def _ours(**options) -> Callable[..., paddle.optimizer.Optimizer]:
    def make(parameters, **overrides):
        # Looked up at call time, so a patched or reloaded class is the one measured.
        return paddle_momentum.Momentum(parameters=parameters,
                                        **{**HYPERPARAMETERS, **overrides}, **options)
    return make


def available_candidates(out: Callable[[str], object] = print) -> List[Candidate]:
    """The built-in (plain and multi-tensor) and ours: ``ours-fused`` and ``ours-composed``
    where ``paddle_momentum.Momentum`` takes a ``kernel`` option, else plain ``ours``.

    A kernel that exists but cannot be constructed here (e.g. the fused C++ kernel failed to
    build) is left out, with a note through ``out``.
    """
    found = [Candidate("builtin", _builtin()),
             Candidate("builtin-mt", _builtin(use_multi_tensor=True))]
    probe = [paddle.to_tensor(np.zeros(4, np.float32), stop_gradient=False)]
    for kernel in ("fused", "composed"):
        make = _ours(kernel=kernel)
        try:
            make(probe)
        except Exception as error:  # noqa: BLE001 - reported, the other candidates still run
            out(f"note: ours-{kernel} left out: {type(error).__name__}: {error}")
            continue
        found.append(Candidate(f"ours-{kernel}", make))
    return found


# --------------------------------------------------------------------------------- workloads
@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark workload.

    ``description`` may name ``{shapes}`` (``shapes.label(quick)``: what runs, in words),
    ``{a_third}`` (how many parameters :func:`_a_third` picks) and ``{minimized}``
    (:data:`MINIMIZED`), filled in by :meth:`describe` from what runs;
    ``steppers(candidates, quick)`` is a context manager yielding ``{label: step function}``,
    each step function taking one optimizer step of that candidate on its own state;
    ``shapes`` (a :class:`Vectors` or :class:`ModelParameters`) gives the parameter shapes of
    a dygraph workload as ``shapes(quick)`` (None for static ones, which then report no
    bandwidth and no memory); ``loop``: each step is a training-loop
    step; ``before_step``: a change made before each step (both untimed, see
    :class:`PreparedStep`).
    """

    name: str
    description: str
    steppers: Callable[[Sequence[Candidate], bool], "contextlib.AbstractContextManager"]
    shapes: Optional["Vectors | ModelParameters"] = None
    loop: bool = False
    min_steps: int = 0  # a cheap step's median needs more steps to be steady
    options: dict = dataclasses.field(default_factory=dict)  # over HYPERPARAMETERS
    before_step: Optional[BeforeStep] = None
    take_step: Optional[TakeStep] = None  # the timed call (default: optimizer.step())

    @property
    def is_dygraph(self) -> bool:
        return self.shapes is not None

    def describe(self, quick: bool) -> str:
        """The description of what runs (with ``quick``: the quick sizes)."""
        if not self.is_dygraph:
            return self.description
        return self.description.format(shapes=self.shapes.label(quick),
                                       a_third=len(_a_third(self.shapes(quick))),
                                       minimized=MINIMIZED)


@dataclasses.dataclass(frozen=True)
class Vectors:
    """``count`` float32 vectors of ``length`` elements, and under ``--quick``
    ``quick_count`` of ``quick_length`` (each defaulting to the full size). Called with
    ``quick``, the parameter shapes; :meth:`label` says the same in words."""

    count: int
    length: int
    quick_count: Optional[int] = None
    quick_length: Optional[int] = None

    def _size(self, quick: bool):
        if not quick:
            return self.count, self.length
        return (self.count if self.quick_count is None else self.quick_count,
                self.length if self.quick_length is None else self.quick_length)

    def __call__(self, quick: bool) -> List[List[int]]:
        count, length = self._size(quick)
        return [[length]] * count

    def label(self, quick: bool) -> str:
        count, length = self._size(quick)
        return f"one vector of {length:,} elements" if count == 1 else f"{count} x [{length}]"


@dataclasses.dataclass(frozen=True)
class ModelParameters:
    """The trainable parameter shapes of ``paddle.vision.models.<model>()`` (``quick_model``'s
    under ``--quick``)."""

    model: str
    quick_model: str

    def __call__(self, quick: bool) -> List[List[int]]:
        return _model_shapes(self.quick_model if quick else self.model)

    def label(self, quick: bool) -> str:
        return f"{self.quick_model if quick else self.model} trainable parameters"


@functools.lru_cache(maxsize=None)
def _model_shapes(model: str) -> List[List[int]]:
    network = getattr(paddle.vision.models, model)()
    return [list(p.shape) for p in network.parameters() if not p.stop_gradient]


# Per-tensor overhead dominates.
many_small_shapes = Vectors(2000, 512, quick_count=200)
resnet50_shapes = ModelParameters("resnet50", quick_model="resnet18")  # 25.6M, 11.7M elements
# Pure memory bandwidth.
one_big_shapes = Vectors(1, 2**26, quick_length=2**20)
# A step whose cost is mostly per-step bookkeeping, where re-deriving changed settings shows.
settings_shapes = Vectors(300, 64)


def total_elements(shapes: Sequence[Sequence[int]]) -> int:
    return sum(int(np.prod(shape)) for shape in shapes)


def gradient_values(shapes: Sequence[Sequence[int]], seed: int = SEED):
    """``(parameter values, gradient tensors)``: fixed float32 values for a dygraph workload."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
    gradients = [paddle.to_tensor(rng.standard_normal(shape, dtype=np.float32))
                 for shape in shapes]
    return values, gradients


def parameters_with_gradients(values, gradients) -> List[paddle.Tensor]:
    """A fresh copy of the parameters whose ``.grad`` is ``gradients``, set by one backward
    pass of ``sum(p * G)``. The gradients then stay as they are for every step."""
    parameters = [paddle.to_tensor(value, stop_gradient=False) for value in values]
    backward_of_dot(parameters, gradients)
    return parameters


def backward_of_dot(parameters, gradients) -> None:
    """Backward pass of ``sum(p * G)``: the gradient of each parameter p becomes its G."""
    paddle.add_n([(p * g).sum() for p, g in zip(parameters, gradients)]).backward()


class PreparedStep:
    """``optimizer.step()`` with an untimed ``prepare()`` before each step, which, in a training
    loop (``loop``), clears the gradients and runs the backward pass of ``sum(p * G)``
    (producing fresh gradient tensors equal to G), then calls ``before_step(optimizer,
    parameters, step_index)`` where given, ``step_index`` counting this stepper's steps from 0,
    warm-up steps included (every candidate sees the same sequence of changes)."""

    def __init__(self, optimizer, parameters, gradients, loop: bool = False,
                 before_step: Optional[BeforeStep] = None,
                 take_step: Optional[TakeStep] = None):
        self.optimizer, self.parameters, self.gradients = optimizer, parameters, gradients
        self.loop, self.before_step, self.step_index = loop, before_step, 0
        self.take_step = take_step

    def prepare(self):
        if self.loop:
            self.optimizer.clear_grad()
            backward_of_dot(self.parameters, self.gradients)
        if self.before_step is not None:
            self.before_step(self.optimizer, self.parameters, self.step_index)
        self.step_index += 1

    def __call__(self):
        if self.take_step is None:
            self.optimizer.step()
        else:
            self.take_step(self.optimizer, self.parameters)


def make_stepper(optimizer, parameters, gradients, loop: bool = False,
                 before_step: Optional[BeforeStep] = None,
                 take_step: Optional[TakeStep] = None) -> Stepper:
    """``optimizer.step`` itself, or a :class:`PreparedStep` where there is something to do
    before each step (``loop``, ``before_step``) or another call to time (``take_step``)."""
    if not loop and before_step is None and take_step is None:
        return optimizer.step
    return PreparedStep(optimizer, parameters, gradients, loop, before_step, take_step)


@contextlib.contextmanager
def dygraph_steppers(shapes: Callable[[bool], List[List[int]]],
                     candidates: Sequence[Candidate], quick: bool,
                     loop: bool = False, options=None,
                     before_step: Optional[BeforeStep] = None,
                     take_step: Optional[TakeStep] = None) -> Iterator[Dict[str, Stepper]]:
    """``opt.step`` of every candidate, each over its own parameters and gradients, built with
    ``options`` over the hyperparameters (``loop``, ``before_step``: as a
    :class:`PreparedStep`)."""
    values, gradients = gradient_values(shapes(quick))
    steppers = {}
    for candidate in candidates:
        parameters = parameters_with_gradients(values, gradients)
        optimizer = candidate.make(parameters, **(options or {}))
        steppers[candidate.label] = make_stepper(optimizer, parameters, gradients, loop,
                                                 before_step, take_step)
    del values, gradients
    gc.collect()
    try:
        yield steppers
    finally:
        steppers.clear()
        gc.collect()


MLP_SIZES = (784, 200, 10)
MLP_BATCH = 64


def mlp_program(candidate: Candidate, executor: paddle.static.Executor,
                weights: Sequence[np.ndarray], feed: Dict[str, np.ndarray]) -> Stepper:
    """Build a Linear-ReLU-Linear cross-entropy program minimized by ``candidate`` in its own
    Program and Scope, initialize it, and return one training step (``Executor.run``)."""
    main, startup, scope = paddle.static.Program(), paddle.static.Program(), paddle.static.Scope()
    with paddle.static.scope_guard(scope), paddle.utils.unique_name.guard(), \
            paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [MLP_BATCH, MLP_SIZES[0]], "float32")
        label = paddle.static.data("label", [MLP_BATCH, 1], "int64")
        layers = [paddle.nn.Linear(n_in, n_out,
                                   weight_attr=paddle.nn.initializer.Assign(weight))
                  for (n_in, n_out), weight in zip(zip(MLP_SIZES, MLP_SIZES[1:]), weights)]
        logits = layers[1](paddle.nn.functional.relu(layers[0](x)))
        loss = paddle.nn.functional.cross_entropy(logits, label)
        candidate.make(None).minimize(loss)
        executor.run(startup)
    return lambda: executor.run(main, feed=feed, fetch_list=[loss], scope=scope)


@contextlib.contextmanager
def static_mlp_steppers(candidates: Sequence[Candidate],
                        quick: bool) -> Iterator[Dict[str, Stepper]]:
    """``Executor.run`` of a 784-200-10 MLP training step (batch 64), one program per
    candidate, all from the same weights and batch; dygraph is restored on exit."""
    rng = np.random.default_rng(SEED)
    weights = [(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
               for n_in, n_out in zip(MLP_SIZES, MLP_SIZES[1:])]
    feed = {"x": rng.standard_normal((MLP_BATCH, MLP_SIZES[0])).astype(np.float32),
            "label": rng.integers(0, MLP_SIZES[-1], (MLP_BATCH, 1)).astype(np.int64)}
    paddle.enable_static()
    try:
        executor = paddle.static.Executor(paddle.CPUPlace())
        yield {c.label: mlp_program(c, executor, weights, feed) for c in candidates}
    finally:
        paddle.disable_static()


def _dygraph(name, description, shapes, loop=False, before_step=None, take_step=None,
             **options) -> Workload:
    return Workload(
        name, description,
        lambda candidates, quick: dygraph_steppers(shapes, candidates, quick, loop, options,
                                                   before_step, take_step),
        shapes, loop=loop, options=options, before_step=before_step, take_step=take_step)


# Per-step setting changes (``before_step``), each read by the built-in's step() and ours.
def scale_learning_rates(optimizer, parameters, step_index) -> None:
    """Every parameter's ``optimize_attr['learning_rate']`` := a fresh float,
    ``1 / (1 + 0.01 * step_index)`` (the dict is made at the first call: these parameters
    are plain tensors, which have none)."""
    scale = 1.0 / (1 + 0.01 * step_index)
    for param in parameters:
        attributes = getattr(param, "optimize_attr", None)
        if attributes is None:
            attributes = param.optimize_attr = {}
        attributes["learning_rate"] = scale


def replace_clip(optimizer, parameters, step_index) -> None:
    """The optimizer's clip := a new ``ClipGradByGlobalNorm(1.0)`` object."""
    optimizer._grad_clip = paddle.nn.ClipGradByGlobalNorm(1.0)


def toggle_need_clip(optimizer, parameters, step_index) -> None:
    """``need_clip`` of every other parameter (0, 2, 4, ...) := True at even steps, False at
    odd ones."""
    need_clip = step_index % 2 == 0
    for param in parameters[::2]:
        param.need_clip = need_clip


def schedule_weight_decay(optimizer, parameters, step_index) -> None:
    """The optimizer's L2 coefficient (``_regularization_coeff``) := ``1e-4 * (1 + 0.01 *
    step_index)``, a weight-decay schedule."""
    optimizer._regularization_coeff = 1e-4 * (1 + 0.01 * step_index)


def toggle_clip(optimizer, parameters, step_index) -> None:
    """The optimizer's clip := a ``ClipGradByGlobalNorm(1.0)`` at even steps, None at odd."""
    optimizer._grad_clip = (paddle.nn.ClipGradByGlobalNorm(1.0) if step_index % 2 == 0
                            else None)


def _a_third(parameters):
    """The first third of ``parameters``: a layer the changes below apply to."""
    return parameters[:len(parameters) // 3]


def toggle_frozen(optimizer, parameters, step_index) -> None:
    """``stop_gradient`` of the first third of the parameters := True at odd steps (a frozen
    layer: the step skips it), False at even ones."""
    for param in _a_third(parameters):
        param.stop_gradient = step_index % 2 == 1


def replace_regularizers(optimizer, parameters, step_index) -> None:
    """``regularizer`` of the first third of the parameters := a new
    ``L2Decay(1e-4 * (1 + 0.01 * step_index))`` (a per-layer decay schedule)."""
    for param in _a_third(parameters):
        param.regularizer = paddle.regularizer.L2Decay(1e-4 * (1 + 0.01 * step_index))


def drop_gradients(optimizer, parameters, step_index) -> None:
    """At odd steps the first third of the parameters lose their gradient (a layer unused in
    this step's forward pass: after the loop's backward, ``clear_gradient(False)``)."""
    if step_index % 2 == 1:
        for param in _a_third(parameters):
            param.clear_gradient(False)


MINIMIZED = 100  # minimize(parameters=) lists this many of the workload's parameters


def minimize_some(optimizer, parameters) -> None:
    """``optimizer.minimize(loss, parameters=...)`` of the first :data:`MINIMIZED`
    parameters (in dygraph ``minimize`` takes the gradients there: the loss is not used)."""
    optimizer.minimize(parameters[0], parameters=parameters[:MINIMIZED])


_LOOP = "; step() in a training loop (clear_grad + backward before each, untimed)"
_MLP = "-".join(map(str, MLP_SIZES))
# Descriptions name what the shapes make as {shapes}, and {a_third} and {minimized} (see
# Workload): filled in from what runs, so that --quick's sizes are the ones printed.
WORKLOADS: Dict[str, Workload] = {w.name: w for w in (
    _dygraph("many-small", "{shapes}", many_small_shapes),
    _dygraph("resnet50", "{shapes}", resnet50_shapes),
    _dygraph("one-big", "{shapes}", one_big_shapes),
    # ~2 ms steps whose medians moved 0.93-1.13 between 21-step runs, 1.01-1.02 at 300.
    Workload("static-mlp", f"Executor.run of a {_MLP} MLP, batch {MLP_BATCH}",
             static_mlp_steppers, min_steps=300),
    _dygraph("many-small-loop", "{shapes}" + _LOOP, many_small_shapes, loop=True),
    _dygraph("resnet50-loop", "{shapes}" + _LOOP, resnet50_shapes, loop=True),
    # The gradient clips and a non-L2 regularizer (each left the fast path before).
    _dygraph("many-small-globalnorm", "{shapes}, ClipGradByGlobalNorm(1.0)",
             many_small_shapes, grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0)),
    _dygraph("many-small-norm", "{shapes}, ClipGradByNorm(0.1)", many_small_shapes,
             grad_clip=paddle.nn.ClipGradByNorm(0.1)),
    _dygraph("many-small-value", "{shapes}, ClipGradByValue(0.01)", many_small_shapes,
             grad_clip=paddle.nn.ClipGradByValue(0.01)),
    _dygraph("many-small-l1", "{shapes}, weight_decay=L1Decay(1e-4)", many_small_shapes,
             weight_decay=paddle.regularizer.L1Decay(1e-4)),
    _dygraph("resnet50-globalnorm", "{shapes}, ClipGradByGlobalNorm(1.0)",
             resnet50_shapes, grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0)),
    # A setting the step reads changes before every step (untimed, alike for all candidates).
    _dygraph("settings-lr-scale", "{shapes}; before each step every parameter's "
             "optimize_attr['learning_rate'] := a new float 1/(1 + 0.01 * step)",
             settings_shapes, before_step=scale_learning_rates),
    _dygraph("settings-new-clip", "{shapes}; before each step opt._grad_clip := a new "
             "ClipGradByGlobalNorm(1.0)", settings_shapes, before_step=replace_clip),
    _dygraph("settings-need-clip", "{shapes}, ClipGradByGlobalNorm(1.0); before each step "
             "need_clip of every other parameter toggled (True at even steps, False at odd)",
             settings_shapes, before_step=toggle_need_clip,
             grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0)),
    _dygraph("settings-decay-schedule", "{shapes}, weight_decay=1e-4; before each step "
             "opt._regularization_coeff := 1e-4 * (1 + 0.01 * step)", settings_shapes,
             before_step=schedule_weight_decay),
    _dygraph("settings-clip-toggle", "{shapes}; before each step opt._grad_clip := "
             "ClipGradByGlobalNorm(1.0) at even steps, None at odd", settings_shapes,
             before_step=toggle_clip),
    _dygraph("settings-freeze", "{shapes}; before each step the first {a_third} parameters' "
             "stop_gradient := True at odd steps, False at even", settings_shapes,
             before_step=toggle_frozen),
    _dygraph("settings-regularizer", "{shapes}; before each step the first {a_third} "
             "parameters' regularizer := a new L2Decay(1e-4 * (1 + 0.01 * step))",
             settings_shapes, before_step=replace_regularizers),
    _dygraph("settings-unused", "{shapes}" + _LOOP + "; at odd steps the first {a_third} "
             "parameters get no gradient (a layer unused in that forward pass)",
             settings_shapes, loop=True,
             before_step=drop_gradients),
    _dygraph("settings-minimize", "{shapes}; minimize(loss, parameters=<the first "
             "{minimized}>) in place of step()", settings_shapes, take_step=minimize_some),
)}


def ran(workload: Workload, quick: bool) -> str:
    """What ``workload`` runs (``quick``: its quick sizes), in a few words: its shapes (a
    static workload: its model)."""
    if workload.is_dygraph:
        return workload.shapes.label(quick)
    return f"{_MLP} MLP, batch {MLP_BATCH}"
