"""Diff an optimizer against a reference (by default Paddle's built-in Momentum) on your own
model, data and device: the largest difference, in units in the last place, per parameter and
per optimizer-state tensor, over every step.

    import paddle
    from paddle_momentum import Momentum, testing

    report = testing.compare(
        lambda params: Momentum(0.1, 0.9, parameters=params, weight_decay=1e-4),
        lambda params: paddle.optimizer.Momentum(0.1, 0.9, parameters=params,
                                                 weight_decay=1e-4),
        model=lambda: paddle.nn.Linear(8, 2),
        batches=[paddle.randn([4, 8]) for _ in range(5)],
        loss=lambda model, x: model(x).square().mean())
    report.assert_equal()          # AssertionError with the worst tensors, unless 0 ulp
    print(report)                  # a table: tensor, kind, largest ulp, first step it differs

Both runs build the model from the same seed and under the same unique names (so parameters
and state-dict keys match), see the same batches, and run ``loss -> backward -> step ->
clear_grad`` on ``place`` (default: Paddle's current device), or your own ``step``. The parity
command and our test matrix compare ours with the built-in through :func:`compare`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterable, List, Optional

import numpy as np
import paddle
from paddle.utils import unique_name

__all__ = ["compare", "Report", "Difference", "ulp_distance", "max_ulp"]


def ulp_distance(expected, actual):
    """The largest distance in units in the last place between two float arrays, in their own
    dtype's ulps (0: the same bits up to the sign of zero; NaN against NaN counts as equal;
    inf: NaN against a number, or different shapes or dtypes). A uint16 array is taken as
    bfloat16 bits (what Paddle's ``.numpy()`` gives for bfloat16)."""
    if expected is None or actual is None:
        return 0 if expected is None and actual is None else float("inf")
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return float("inf")
    if expected.size == 0:
        return 0
    bfloat16 = expected.dtype == np.uint16
    if expected.dtype.kind != "f" and not bfloat16:
        return 0 if np.array_equal(expected, actual) else float("inf")
    integer = {2: np.int16, 4: np.int32, 8: np.int64}[expected.dtype.itemsize]
    if bfloat16:  # (exponent all ones, a mantissa)
        nan_a, nan_b = (((v & 0x7F80) == 0x7F80) & ((v & 0x7F) != 0)
                        for v in (expected, actual))
    else:
        nan_a, nan_b = np.isnan(expected), np.isnan(actual)
    if (nan_a != nan_b).any():
        return float("inf")

    def ordered(values):  # floats -> integers in the same order, adjacent floats 1 apart
        bits = values.view(integer).astype(np.int64)
        return np.where(bits < 0, np.iinfo(integer).min - bits, bits)

    distance = np.abs(ordered(expected).astype(object) - ordered(actual).astype(object))
    distance[nan_a] = 0
    return int(distance.max())


def max_ulp(reference_run, ours_run):
    """The largest ulp distance over every step, parameter and velocity of two runs (lists of
    ``(params, velocities)`` snapshots, one per step)."""
    worst = 0
    for (ref_params, ref_vel), (our_params, our_vel) in zip(reference_run, ours_run):
        for expected, actual in zip(ref_params + ref_vel, our_params + our_vel):
            worst = max(worst, ulp_distance(expected, actual))
    return worst if len(reference_run) == len(ours_run) else float("inf")


@dataclasses.dataclass(frozen=True)
class Difference:
    """One tensor's comparison: ``name`` (a parameter's, or a state-dict key), ``kind``
    ('parameter' or 'state'), ``ulp`` (the largest over every step; inf: missing on one
    side, another shape or dtype, NaN against a number), ``first_step`` (the first step,
    counted from 1, where it differed, in ulp or in bits; None: never) and ``same_bits``
    (every step's values identical, bit for bit: zero signs and NaN payloads too, which
    ``ulp`` does not count)."""

    name: str
    kind: str
    ulp: float
    first_step: Optional[int]
    same_bits: bool = True


@dataclasses.dataclass
class Report:
    """What :func:`compare` found: ``differences`` (one per tensor, in the model's order,
    then the state's) and ``steps``."""

    differences: List[Difference]
    steps: int

    @property
    def max_ulp(self):
        return max((d.ulp for d in self.differences), default=0)

    def assert_equal(self, ulp=0, bitwise=False):
        """Raise AssertionError (naming the worst tensors) unless every tensor is within
        ``ulp`` (default 0: equal up to the sign of zero and NaN payloads); ``bitwise``: unless
        every tensor has the same bits."""
        failing = [d for d in self.differences
                   if d.ulp > ulp or (bitwise and not d.same_bits)]
        if failing:
            worst = sorted(failing, key=lambda d: -d.ulp)[:10]
            how = ("in their bits (zero signs and NaN payloads count)" if bitwise
                   else f"by more than {ulp} ulp")
            raise AssertionError(f"{len(failing)} of {len(self.differences)} tensors differ "
                                 f"{how} over {self.steps} steps:\n" + _table(worst))

    def __str__(self):
        return (f"{len(self.differences)} tensors over {self.steps} steps, largest difference "
                f"{self.max_ulp} ulp\n" + _table(self.differences))


def _table(differences):
    lines = [f"{'tensor':40s} {'kind':9s} {'max ulp':>10s}  {'bits':6s}  first step"]
    for d in differences:
        lines.append(f"{d.name[:40]:40s} {d.kind:9s} {d.ulp!s:>10s}  "
                     f"{'same' if d.same_bits else 'differ':6s}  "
                     f"{'-' if d.first_step is None else d.first_step}")
    return "\n".join(lines)


def compare(optimizer: Callable, reference: Optional[Callable] = None, *,
            model: Callable[[], paddle.nn.Layer], batches: Iterable,
            loss: Optional[Callable] = None, seed: int = 0, place: Optional[str] = None,
            step: Optional[Callable] = None) -> Report:
    """Train ``model()`` with ``optimizer(parameters)`` and with ``reference(parameters)``
    (default: ``paddle.optimizer.Momentum`` with learning rate 0.1 and momentum 0.9: pass
    your own to match your settings) on ``batches`` (``loss(model, batch)`` gives each step's
    loss), and compare every parameter and every optimizer-state tensor after every step.
    ``place``: the device to run on ('cpu', 'gpu', 'gpu:1', ...; default: the current).
    ``step(model, optimizer, batch, index)``, in place of ``loss``: one training step of your
    own (``minimize``, a scheduler, accumulated gradients, ...)."""
    if (loss is None) == (step is None):
        raise TypeError("give loss (the default step: loss -> backward -> step -> clear_grad) "
                        "or step (your own), not both")
    if step is None:
        def step(model, optimizer, batch, index):
            loss(model, batch).backward()
            optimizer.step()
            optimizer.clear_grad()
    if reference is None:
        def reference(params):
            return paddle.optimizer.Momentum(0.1, 0.9, parameters=params)
    if not paddle.in_dynamic_mode():
        raise RuntimeError("compare trains in dygraph: call paddle.disable_static() first")
    if isinstance(model, paddle.nn.Layer) or not callable(model):
        raise TypeError("model must be a factory (called once per run, so that both runs "
                        f"start alike), got {type(model).__name__}: pass lambda: YourModel()")
    for name, factory in (("optimizer", optimizer), ("reference", reference)):
        if not callable(factory):
            raise TypeError(f"{name} must be a factory taking the parameters, got "
                            f"{type(factory).__name__}")
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: give at least one batch to train on")
    runs = [_train(factory, model, batches, step, seed, place)
            for factory in (reference, optimizer)]
    differences = []
    for kind, index in (("parameter", 0), ("state", 1)):
        # (every step's: state created later, e.g. after accumulated steps, counts too)
        names = list(dict.fromkeys(name for run in runs for snapshot in run
                                   for name in snapshot[index]))
        for name in names:
            worst, first, same_bits = 0, None, True
            for number, (expected, actual) in enumerate(zip(runs[0], runs[1]), start=1):
                expected, actual = expected[index].get(name), actual[index].get(name)
                distance = ulp_distance(expected, actual)
                bits_equal = _same_bits(expected, actual)
                if (distance or not bits_equal) and first is None:
                    first = number
                worst = max(worst, distance)
                same_bits = same_bits and bits_equal
            differences.append(Difference(name, kind, worst, first, same_bits))
    return Report(differences, len(batches))


@contextlib.contextmanager
def _on(place):
    if place is None:
        yield
        return
    previous = paddle.get_device()
    paddle.set_device(place)
    try:
        yield
    finally:
        paddle.set_device(previous)


@contextlib.contextmanager
def _restored_rng():
    """Paddle's random generators as they were (the runs seed them): the CPU's and the
    current device's (``get_rng_state`` takes no device name before Paddle 3.1)."""
    cpu = paddle.base.core.default_cpu_generator()
    cpu_state, device_states = cpu.get_state(), paddle.get_rng_state()
    try:
        yield
    finally:
        paddle.set_rng_state(device_states)
        cpu.set_state(cpu_state)


def _same_bits(expected, actual):
    if expected is None or actual is None:
        return expected is None and actual is None
    return (expected.dtype == actual.dtype and expected.shape == actual.shape
            and expected.tobytes() == actual.tobytes())


def _train(factory, model_factory, batches, step, seed, place):
    """``[(parameters, state)]`` after every step: name -> numpy array each."""
    snapshots = []
    with _restored_rng(), _on(place), unique_name.guard(), _restored_rng():
        paddle.seed(seed)
        model = model_factory()
        if not isinstance(model, paddle.nn.Layer):
            raise TypeError(f"the model factory returned {type(model).__name__}, not a "
                            "paddle.nn.Layer")
        optimizer = factory(model.parameters())
        if not hasattr(optimizer, "step"):
            raise TypeError(f"the optimizer factory returned {type(optimizer).__name__}, not "
                            "an optimizer")
        for index, batch in enumerate(batches):
            step(model, optimizer, batch, index)
            params = {p.name: p.numpy().copy() for p in model.parameters()}
            state = {key: value.numpy().copy()
                     for key, value in _flatten(optimizer.state_dict())
                     if isinstance(value, paddle.Tensor)}
            snapshots.append((params, state))
    return snapshots


def _flatten(state, prefix=""):
    for key, value in state.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value
