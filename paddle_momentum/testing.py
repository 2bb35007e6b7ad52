"""Diff an optimizer against a reference (by default Paddle's built-in Momentum) on your own
model, data and device: per parameter and per optimizer-state tensor, over every step, the
largest absolute difference, the largest relative difference, the largest distance in units
in the last place (ulp), the first step it differs, and where the largest difference is.

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
    print(report)                  # the largest differences, then a table: one row a tensor

Both runs build the model from the same seed and under the same unique names (so parameters
and state-dict keys match), see the same batches, and run ``loss -> backward -> step ->
clear_grad`` on ``place`` (default: Paddle's current device), or your own ``step``.
:func:`compare_runs` compares two runs recorded otherwise (static programs, say). The parity
command compares ours with the built-in through both, our test matrix through :func:`compare`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterable, List, Optional, Tuple

import numpy as np
import paddle
from paddle.utils import unique_name

__all__ = ["compare", "compare_runs", "Report", "Difference", "Element", "ulp_distance",
           "max_ulp"]


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
    expected, actual = expected.reshape(-1), actual.reshape(-1)  # (a 0-d array too)
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
class Element:
    """One element of a tensor at one step: ``step`` (counted from 1), ``index`` (its
    multi-index, ``()`` in a 0-d tensor; None for a whole-tensor mismatch) and the two values
    there, ``expected`` (the reference's) and ``actual`` (the tested run's), numpy scalars of
    the tensor's dtype (bfloat16 as float32; None for a mismatch). ``str``: "step 4 [3, 7]"."""

    step: int
    index: Optional[Tuple[int, ...]]
    expected: Any = None
    actual: Any = None

    def __str__(self):
        if not self.index:
            return f"step {self.step}"
        return f"step {self.step} [{', '.join(map(str, self.index))}]"

    @property
    def values(self) -> str:
        """The two values in words: "reference 1.0241886, tested 1.1332024"."""
        return f"reference {_value(self.expected)}, tested {_value(self.actual)}"


@dataclasses.dataclass(frozen=True)
class Difference:
    """One tensor's comparison over every step: ``name`` (a parameter's, or a state-dict key)
    and ``kind`` ('parameter' or 'state'), then what differs.

    With ``e`` an element of the reference's tensor and ``a`` the same element of the tested
    run's, both taken to float64 (a uint16 array is bfloat16 bits, as in :func:`ulp_distance`):

    * ``max_abs``: the largest ``|a - e|``;
    * ``max_rel``: the largest ``|a - e| / |e|``, where ``e`` is 0: 0 if ``a`` is 0 too, inf
      otherwise (a value that leaves exactly 0 has no finite relative size; ``max_abs`` gives
      its size);
    * ``ulp``: the largest :func:`ulp_distance`;

    each over every element and every step. Equal values (``0.0`` and ``-0.0``, NaN and NaN,
    inf and inf) count 0 in all three; NaN against a number counts inf in all three, an
    infinity against another value inf in ``max_abs`` and ``max_rel``. ``first_step``: the first step, counted from 1, where the tensor differs
    in value or in bits (None: never); ``same_bits``: every step's values identical, bit for
    bit (zero signs and NaN payloads too, which the three measures do not count).

    Where, as an :class:`Element` (step, multi-index, the two values): ``at_max_abs``, the
    element with the largest absolute difference (the first of equals: earliest step, then
    lowest flat index; where no value differs but bits do, the first element whose bits
    differ) and ``at_max_rel``, the one with the largest relative difference; None where the
    tensors have the same bits.

    ``mismatch``: why the tensors cannot be compared element by element, at the step of
    ``at_max_abs`` (the first where it happens): "missing in the reference", "missing in the
    tested run", "shape [2] vs [3]" or "dtype float32 vs float64" (the reference's first);
    ``ulp``, ``max_abs`` and ``max_rel`` are inf then. None otherwise."""

    name: str
    kind: str
    ulp: float
    first_step: Optional[int]
    same_bits: bool = True
    max_abs: float = 0.0
    max_rel: float = 0.0
    at_max_abs: Optional[Element] = None
    at_max_rel: Optional[Element] = None
    mismatch: Optional[str] = None

    @property
    def values(self) -> Optional[str]:
        """What differs, in words, where the three measures cannot say it: the mismatch, the
        two values where one is NaN or infinite ("NaN vs 1.5"), or where only bits differ
        ("0.0 vs -0.0 (zero sign)"); None otherwise. The reference's value first."""
        if self.mismatch is not None:
            return self.mismatch
        element = self.at_max_abs
        if element is None or 0 < self.max_abs < float("inf"):
            return None
        pair = f"{_value(element.expected)} vs {_value(element.actual)}"
        if self.max_abs == 0:  # bits only
            return pair + (" (payload)" if _value(element.expected) == "NaN" else " (zero sign)")
        return pair


@dataclasses.dataclass
class Report:
    """What :func:`compare` found: ``differences`` (one per tensor, in the model's order,
    then the state's) and ``steps``. ``max_ulp``, ``max_abs`` and ``max_rel`` are the largest
    over every tensor (see :class:`Difference` for the measures); ``worst`` is the tensor with
    the largest absolute difference.

    ``print(report)``: the number of tensors that differ; the largest absolute and relative
    differences and ulp; the tensor, step, index and the two values of the largest absolute
    difference and of the largest relative one; then a table, one row a tensor: name, kind,
    max abs, max rel, max ulp, first step, and where its largest absolute difference is. A
    row whose differences the numbers cannot say shows them in words in place of the three
    measures: "missing in the tested run", "shape [2] vs [3]", "dtype float32 vs float64",
    "NaN vs 1.5", "0.0 vs -0.0 (zero sign)". Numbers have 3 significant digits (an ulp count
    below 10**7 is whole); lines fit in 100 columns (a name longer than 30 characters is
    shortened in its middle in the table)."""

    differences: List[Difference]
    steps: int

    @property
    def max_ulp(self):
        return max((d.ulp for d in self.differences), default=0)

    @property
    def max_abs(self):
        return max((d.max_abs for d in self.differences), default=0.0)

    @property
    def max_rel(self):
        return max((d.max_rel for d in self.differences), default=0.0)

    @property
    def worst(self) -> Optional[Difference]:
        """The tensor with the largest absolute difference (the first of equals; where no
        value differs, the first whose bits do), None where every tensor has the same bits."""
        differing = [d for d in self.differences if d.at_max_abs is not None]
        return max(differing, key=lambda d: d.max_abs, default=None)

    def assert_equal(self, ulp=0, bitwise=False):
        """Raise AssertionError (the largest differences, then a table of the worst tensors)
        unless every tensor is within ``ulp`` (default 0: equal up to the sign of zero and NaN
        payloads); ``bitwise``: unless every tensor has the same bits."""
        __tracebackhide__ = True  # (pytest: show the table, not this function's source)
        failing = [d for d in self.differences
                   if d.ulp > ulp or (bitwise and not d.same_bits)]
        if failing:
            worst = sorted(failing, key=lambda d: (-d.max_abs, -d.ulp))[:10]
            how = ("in their bits (zero signs and NaN payloads count)" if bitwise
                   else f"by more than {ulp} ulp")
            raise AssertionError("\n".join(
                [f"{len(failing)} of {_counted(len(self.differences), 'tensor')} "
                 f"differ{'s' if len(failing) == 1 else ''} {how} over "
                 f"{_counted(self.steps, 'step')}"] + self._largest() + [_table(worst)]
                + ([] if len(failing) == len(worst) else
                   [f"(the {len(worst)} of {len(failing)} with the largest absolute "
                    "difference)"])))

    def __str__(self):
        differing = sum(d.first_step is not None for d in self.differences)
        count = (f"{_counted(len(self.differences), 'tensor')} over "
                 f"{_counted(self.steps, 'step')}, "
                 + (f"{differing} differ" if differing else "the same bits"))
        return "\n".join([count] + self._largest() + [_table(self.differences)])

    def _largest(self):
        """The largest differences and where they are, in lines of at most 100 columns
        (unless a name is longer)."""
        worst = self.worst
        if worst is None:
            return []
        if not any(d.ulp or d.max_abs for d in self.differences):
            return [f"the same values; bits differ first in {worst.name}, "
                    f"{worst.at_max_abs}: {worst.values}"]
        lines = [f"largest differences: {_number(self.max_abs)} absolute, "
                 f"{_number(self.max_rel)} relative, {_number(self.max_ulp)} ulp"]
        relative = max((d for d in self.differences if d.at_max_rel is not None),
                       key=lambda d: d.max_rel, default=None)
        for what, tensor, element in (("absolute", worst, worst.at_max_abs),
                                      ("relative", relative, relative and relative.at_max_rel)):
            if element is None or (what == "relative" and tensor is worst and (
                    element.step, element.index) == (worst.at_max_abs.step,
                                                     worst.at_max_abs.index)):
                continue  # (the same element: said once)
            where = f"largest {what}: {tensor.name} {element}"
            values = (tensor.values if tensor.mismatch or element.expected is None
                      else element.values)
            lines += ([f"{where}, {values}"] if len(where) + 2 + len(values) <= 100
                      else [where, f"  {values}"])
        return lines


_NAME_WIDTH = 30  # (a longer name is shortened in its middle: rows fit in 100 columns)


def _table(differences):
    """One row a tensor: name, kind, max abs, max rel, max ulp, first step, where the largest
    absolute difference is; in place of the three measures the values in words where those
    cannot say what differs (``Difference.values``)."""
    width = min(_NAME_WIDTH, max([len("tensor")] + [len(d.name) for d in differences]))
    lines = [f"{'tensor':{width}s} {'kind':9s} {'max abs':>8s}  {'max rel':>8s}  "
             f"{'max ulp':>8s}  first  where (largest abs)"]
    for d in differences:
        name = d.name if len(d.name) <= width else \
            d.name[:width // 2 - 2] + "..." + d.name[-(width - width // 2 - 1):]
        values = d.values
        measures = (f"{values:28s}" if values is not None else
                    f"{_number(d.max_abs):>8s}  {_number(d.max_rel):>8s}  {_number(d.ulp):>8s}")
        first = "-" if d.first_step is None else str(d.first_step)
        where = "-" if d.at_max_abs is None else str(d.at_max_abs)
        lines.append(f"{name:{width}s} {d.kind:9s} {measures}  {first:5s}  {where}")
    return "\n".join(lines)


def _counted(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _number(x):
    """3 significant digits (0.0123, 1.81e+07); an integer below 10**7 (an ulp count) whole."""
    if x != x:
        return "NaN"
    if x == 0 or x == float("inf"):
        return "0" if x == 0 else "inf"
    if isinstance(x, (int, np.integer)) and x < 10 ** 7:
        return str(x)
    return f"{x:.3g}"


def _value(x):
    """An element as numpy prints it, its dtype's shortest round trip: 0.1, -0.0, NaN, inf."""
    if x is None:
        return "-"
    if np.isnan(x):
        return "NaN"
    return str(x)


def compare_runs(reference_run, tested_run) -> Report:
    """Compare two runs given as lists of snapshots, one per step, each a pair
    ``(parameters, state)`` of dicts name -> numpy array (None or absent: not there at that
    step): every tensor of either run at every step (a step only one run has counts as
    missing in the other). :func:`compare` trains the two runs and calls this."""
    steps = max(len(reference_run), len(tested_run))
    runs = [list(run) + [({}, {})] * (steps - len(run)) for run in (reference_run, tested_run)]
    differences = []
    for kind, index in (("parameter", 0), ("state", 1)):
        # (every step's: state created later, e.g. after accumulated steps, counts too)
        names = list(dict.fromkeys(name for run in runs for snapshot in run
                                   for name in snapshot[index]))
        for name in names:
            pairs = [(expected[index].get(name), actual[index].get(name))
                     for expected, actual in zip(*runs)]
            differences.append(_difference(name, kind, pairs))
    return Report(differences, steps)


def _difference(name, kind, pairs):
    """The :class:`Difference` of one tensor given ``(expected, actual)`` at every step."""
    ulp, first_step, same_bits = 0, None, True
    max_abs, max_rel, mismatch = 0.0, 0.0, None
    at_max_abs = at_max_rel = first_bits = None
    for step, (expected, actual) in enumerate(pairs, start=1):
        bits_equal = _same_bits(expected, actual)
        distance = ulp_distance(expected, actual)
        if (distance or not bits_equal) and first_step is None:
            first_step = step
        ulp, same_bits = max(ulp, distance), same_bits and bits_equal
        if bits_equal or mismatch is not None:
            continue
        mismatch = _mismatch(expected, actual)
        if mismatch is not None:
            max_abs = max_rel = float("inf")
            at_max_abs = at_max_rel = Element(step, None)
            continue

        def element(flat):
            return Element(step, tuple(int(i) for i in np.unravel_index(flat, expected.shape)),
                           _scalar(expected, flat), _scalar(actual, flat))

        absolute, relative = _elementwise(expected, actual)
        for measure, largest in ((absolute, max_abs), (relative, max_rel)):
            flat = int(np.argmax(measure))
            if measure[flat] > largest:  # (strictly: the first of equals stays)
                if measure is absolute:
                    max_abs, at_max_abs = float(measure[flat]), element(flat)
                else:
                    max_rel, at_max_rel = float(measure[flat]), element(flat)
        if first_bits is None:
            rows = [np.ascontiguousarray(v).reshape(v.size, 1).view(np.uint8)
                    for v in (expected, actual)]
            first_bits = element(int(np.flatnonzero((rows[0] != rows[1]).any(axis=1))[0]))
    return Difference(name, kind, ulp, first_step, same_bits, max_abs, max_rel,
                      at_max_abs or first_bits, at_max_rel, mismatch)


def _mismatch(expected, actual):
    """Why two tensors cannot be compared element by element, in words (None: they can)."""
    if expected is None or actual is None:
        return f"missing in the {'reference' if expected is None else 'tested run'}"
    if expected.shape != actual.shape:
        return f"shape {list(expected.shape)} vs {list(actual.shape)}"
    if expected.dtype != actual.dtype:
        return f"dtype {_dtype_name(expected)} vs {_dtype_name(actual)}"
    return None


def _dtype_name(values):
    return "bfloat16" if values.dtype == np.uint16 else str(values.dtype)


def _as_float(values):
    """``values`` as floats: bfloat16 bits (uint16, the high half of a float32) as float32."""
    if values.dtype == np.uint16:
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _scalar(values, flat):
    """The element at flat index ``flat`` as a numpy scalar (bfloat16 bits as float32)."""
    return _as_float(values.reshape(-1)[flat:flat + 1])[0]


def _elementwise(expected, actual):
    """``(|a - e|, |a - e| / |e|)`` per element in float64, flat: 0 where the values are equal
    (NaN and NaN too), inf where NaN meets a number or an infinity another value, inf where
    only ``e`` is 0 (see :class:`Difference`)."""
    e, a = (_as_float(values).astype(np.float64).reshape(-1) for values in (expected, actual))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        absolute = np.abs(a - e)
        relative = absolute / np.abs(e)
    equal = (e == a) | (np.isnan(e) & np.isnan(a))
    for measure in (absolute, relative):
        measure[np.isnan(measure)] = np.inf  # NaN - x, inf - inf, inf / inf
        measure[equal] = 0.0
    return absolute, relative


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
    return compare_runs(*[_train(factory, model, batches, step, seed, place)
                          for factory in (reference, optimizer)])


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
