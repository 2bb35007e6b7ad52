"""paddle_momentum.testing: the parity kit for users' suites, diffed against the built-in."""

from __future__ import annotations

import subprocess
import sys

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


# ------------------------------------------------------------------ readable differences
def _oracle(expected_steps, actual_steps):
    """numpy's answer for one tensor over every step: the largest |a - e|, the largest
    |a - e| / |e| (0 where e = a = 0, inf where only e is 0), and (step from 1, multi-index)
    of the largest |a - e| (the first of equals in step-major order)."""
    e = np.stack(expected_steps).astype(np.float64)
    a = np.stack(actual_steps).astype(np.float64)
    absolute = np.abs(a - e)
    nonzero = e != 0
    relative = np.where(nonzero, absolute / np.where(nonzero, np.abs(e), 1.0),
                        np.where(a == 0, 0.0, np.inf))
    step, *index = np.unravel_index(int(np.argmax(absolute)), absolute.shape)
    return absolute.max(), relative.max(), int(step) + 1, tuple(int(i) for i in index)


def test_momentum_09_against_08_reports_what_numpy_computes():
    """Ours with momentum 0.9 against the built-in with 0.8: every tensor's largest absolute
    and relative difference, and where the largest absolute one is, are numpy's answer from
    the two runs' own arrays (recorded by the step as they are trained), and the printed
    report shows them."""
    recorded = {"reference": [], "tested": []}

    def step(model, optimizer, batch, index):
        _loss(model, batch).backward()
        optimizer.step()
        optimizer.clear_grad()
        run = "tested" if isinstance(optimizer, paddle_momentum.Momentum) else "reference"
        snapshot = {p.name: p.numpy().copy() for p in model.parameters()}
        snapshot.update({key: value.numpy().copy()
                         for key, value in optimizer.state_dict().items()
                         if isinstance(value, paddle.Tensor)})
        recorded[run].append(snapshot)

    report = testing.compare(
        lambda params: paddle_momentum.Momentum(0.1, 0.9, parameters=params),
        lambda params: paddle.optimizer.Momentum(0.1, 0.8, parameters=params),
        model=_mlp, batches=BATCHES, step=step, place="cpu")
    text = str(report)
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert {d.name for d in report.differences} == set(recorded["reference"][0])
    for d in report.differences:
        max_abs, max_rel, step_number, index = _oracle(
            [snapshot[d.name] for snapshot in recorded["reference"]],
            [snapshot[d.name] for snapshot in recorded["tested"]])
        assert (d.max_abs, d.max_rel) == (max_abs, max_rel), d.name
        assert (d.at_max_abs.step, d.at_max_abs.index) == (step_number, index), d.name
        expected = recorded["reference"][step_number - 1][d.name][index]
        actual = recorded["tested"][step_number - 1][d.name][index]
        assert (d.at_max_abs.expected, d.at_max_abs.actual) == (expected, actual)
        where = f"step {step_number} [{', '.join(map(str, index))}]"
        assert rows[d.name].split()[2:4] == [f"{max_abs:.3g}", f"{max_rel:.3g}"]
        assert rows[d.name].endswith(where), rows[d.name]
    worst = max(report.differences, key=lambda d: d.max_abs)
    assert report.max_abs == worst.max_abs and report.worst is worst
    assert (f"largest absolute: {worst.name} {worst.at_max_abs}, reference "
            f"{worst.at_max_abs.expected!s}, tested {worst.at_max_abs.actual!s}") in text
    assert f"{report.max_abs:.3g} absolute, {report.max_rel:.3g} relative" in text
    assert max(len(line) for line in text.splitlines()) <= 100


F32 = np.float32
# (what the reference has, what the tested run has, the words the table shows for the tensor)
READABLE = {
    "NaN against a number": (F32([1.5, 2.0]), F32([1.5, np.nan]), "2.0 vs NaN"),
    "infinity against a number": (F32([np.inf]), F32([3.0]), "inf vs 3.0"),
    "shape": (F32([1, 2]), F32([1, 2, 3]), "shape [2] vs [3]"),
    "dtype": (F32([1]), np.float64([1]), "dtype float32 vs float64"),
    "missing in the tested run": (F32([1]), None, "missing in the tested run"),
    "missing in the reference": (None, F32([1]), "missing in the reference"),
    "zero sign": (F32([1.0, 0.0]), F32([1.0, -0.0]), "0.0 vs -0.0 (zero sign)"),
    "NaN payload": (F32([np.nan]), np.uint32([0x7FC00001]).view(F32), "NaN vs NaN (payload)"),
}


@pytest.mark.parametrize("what", READABLE)
def test_what_numbers_cannot_say_is_said_in_words(what):
    """Mismatches, NaN or an infinity against a number, and bit-only differences print as
    words in their row (no giant ulp count), with the step where they happen."""
    expected, actual, words = READABLE[what]
    snapshot = lambda value: ({"w": value} if value is not None else {}, {})  # noqa: E731
    report = testing.compare_runs([snapshot(expected)] * 2,
                                  [snapshot(expected), snapshot(actual)])
    (difference,) = report.differences
    headline, table = str(report).split("\ntensor ")
    row = table.splitlines()[-1]
    assert difference.first_step == 2 and difference.at_max_abs.step == 2
    assert words in row and row.endswith(str(difference.at_max_abs))
    assert not any(len(token) > 8 and token.isdigit() for token in row.split())
    assert str(difference.at_max_abs) in headline  # (said in the headline too)


@pytest.mark.parametrize("expected, actual, max_rel, index", [
    (F32([0.0, 2.0]), F32([0.0, 3.0]), 0.5, (1,)),  # 0 against 0: no relative difference
    (F32([0.0, 2.0]), F32([1e-8, 2.0]), np.inf, (0,)),  # leaving exactly 0: no finite size
    (F32(-4.0), F32(-3.0), 0.25, ()),  # a 0-d tensor
    (np.uint16([0x3F80]), np.uint16([0x3F81]), 2.0 ** -7, (0,)),  # bfloat16: 1 -> 1 + 2**-7
])
def test_relative_difference_where_the_reference_is_zero(expected, actual, max_rel, index):
    report = testing.compare_runs([({"w": expected}, {})], [({"w": actual}, {})])
    assert report.max_rel == max_rel and report.differences[0].at_max_rel.index == index


def test_assert_equal_shows_the_table_not_our_source(tmp_path):
    """Under pytest a failing ``assert_equal`` shows the report, not the lines of
    paddle_momentum/testing.py that raise (``__tracebackhide__``)."""
    script = tmp_path / "test_fails.py"
    script.write_text(
        "import numpy as np\n"
        "from paddle_momentum import testing\n\n\n"
        "def test_fails():\n"
        "    report = testing.compare_runs([({'w': np.float32([1.0, 2.0])}, {})],\n"
        "                                  [({'w': np.float32([1.0, 2.5])}, {})])\n"
        "    report.assert_equal()\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "largest absolute: w step 1 [1], reference 2.0, tested 2.5" in done.stdout
    assert "max abs" in done.stdout and "report.assert_equal()" in done.stdout
    assert "raise AssertionError" not in done.stdout
    assert "testing.py" not in done.stdout.replace("test_fails.py", "")
