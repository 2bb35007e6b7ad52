"""The differential matrix (``paddle_momentum.tools.parity.matrix_cases``): ours against the built-in,
every parameter and velocity after every step, for both kernels."""

import dataclasses

import numpy as np
import pytest

import paddle_momentum
from harness import assert_same
from paddle_momentum import testing
from paddle_momentum.tools import parity

CASES = parity.matrix_cases()


def _assert_runs_equal(expected_run, actual_run, what, exact):
    assert len(expected_run) == len(actual_run) > 0
    for step, ((ref_params, ref_vel), (our_params, our_vel)) in enumerate(
            zip(expected_run, actual_run)):
        pairs = [(f"param {i}", a, b) for i, (a, b) in enumerate(zip(ref_params, our_params))]
        pairs += [(f"velocity {i}", a, b) for i, (a, b) in enumerate(zip(ref_vel, our_vel))]
        for name, expected, actual in pairs:
            if exact or expected is None:
                assert_same(expected, actual, f"{what}: step {step} {name}")
            else:
                # Where static ops round scalars to float32 (parity.static_rounds_attributes)
                # the two modes differ by a few float32 roundings of a coefficient,
                # compounded over the steps.
                np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7,
                                           err_msg=f"{what}: step {step} {name}")


@pytest.mark.parametrize("kernel", ["composed", "fused"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_builtin_every_step(case, kernel, place):
    """Dygraph: ours == built-in. Static: ours == built-in where the built-in runs, and ours
    static == ours dygraph always. For both implementations (fused == composed == built-in)."""
    case = dataclasses.replace(case, kernel=kernel)
    for what, reference, ours, exact in parity.comparisons(case):
        if isinstance(reference, testing.Report):  # (dygraph: testing.compare's report)
            reference.assert_equal(bitwise=True)
        else:
            _assert_runs_equal(reference, ours, what, exact)


def test_matrix_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_ulp_distance():
    one = np.array([1.0], dtype="float32")
    after = np.nextafter(one, np.float32(2))
    assert testing.ulp_distance(one, one) == 0
    assert testing.ulp_distance(one, after) == 1
    assert testing.ulp_distance(np.float32([0.0]), np.float32([-0.0])) == 0
    assert testing.ulp_distance(np.float32([-1e-45]), np.float32([1e-45])) == 2
    assert testing.ulp_distance(np.float32([np.nan]), np.float32([np.nan])) == 0
    assert testing.ulp_distance(np.float32([np.nan]), one) == float("inf")
    assert testing.ulp_distance(one, one.astype("float64")) == float("inf")


def test_parity_command_reports_and_exits_zero():
    lines = []
    every = 27  # (12 cases, two of them float64 static ones whose attributes Paddle rounds)
    failures = parity.run_parity(kernels=("fused",), every=every, out=lines.append)
    count = len(CASES[::every])
    assert failures == 0
    assert lines[-1].startswith(f"{count} cases: {count} pass, 0 fail")
    assert sum(" PASS" in line for line in lines) == count
    noted = [i for i, line in enumerate(lines) if " PASS" in line and "attributes*" in line]
    assert noted  # explained before the first row it concerns, and counted in the total
    assert parity.ATTRIBUTE_NOTE in lines[:noted[0]]
    assert f"({len(noted)} passing float64 static cases" in lines[-1]
    assert not any("ulp" in line for line in lines if " PASS" in line)  # (no big numbers)
    summary = []
    parity.run_parity(kernels=("fused",), every=every, out=summary.append, summary=True)
    assert summary[-1] == lines[-1] and not any(" PASS" in line for line in summary)
    assert parity.ATTRIBUTE_NOTE in summary  # (its mark is in the total)


# A dygraph case, and a float64 static one whose attributes Paddle rounds (a footnote mark)
FAILING = [parity.Case(steps=3), parity.Case(dtype="float64", mode="pir", decay="L1", steps=3)]


def _oracle(reference_run, ours_run):
    """numpy's largest |a - e| and |a - e| / |e| (0 where e = a = 0, inf where only e is 0)
    over every parameter and velocity of two runs' snapshots, every step."""
    pairs = [(e.astype(np.float64), a.astype(np.float64))
             for (ref_params, ref_vel), (our_params, our_vel) in zip(reference_run, ours_run)
             for e, a in zip(ref_params + ref_vel, our_params + our_vel) if e is not None]
    absolute = max(np.abs(a - e).max() for e, a in pairs)
    relative = max(np.where(e != 0, np.abs(a - e) / np.where(e != 0, np.abs(e), 1.0),
                            np.where(a == 0, 0.0, np.inf)).max() for e, a in pairs)
    return absolute, relative


@pytest.mark.parametrize("summary", [False, True])
def test_a_failing_row_gives_the_differences_and_never_says_equal(monkeypatch, summary):
    """Ours with momentum 0.8 against the built-in's 0.9: each failing row gives the largest
    absolute and relative difference numpy finds in the two runs and where it is, never says
    'equal', and every footnote mark printed comes with its footnote, summary or not."""
    monkeypatch.setitem(parity.OPTIMIZERS, "ours", lambda case, model: parity.make_optimizer(
        paddle_momentum.Momentum, case, model, momentum=0.8, kernel=case.kernel,
        rescale_grad_on_cpu=True))
    monkeypatch.setattr(parity, "matrix_cases", lambda: FAILING)
    lines = []
    assert parity.run_parity(kernels=("composed",), out=lines.append, summary=summary) == 2
    rows = [line for line in lines if " FAIL " in line]
    assert len(rows) == 2 and lines[-1].startswith("2 cases: 0 pass, 2 fail")
    assert not any("equal" in row.lower() for row in rows)
    assert all("largest absolute in " in row for row in rows)
    assert "attributes*" in rows[1]  # (the mark: its footnote must be printed too)
    for mark, footnote in parity.FOOTNOTES.items():
        if any(mark in line for line in lines if line != footnote):
            assert footnote in lines
    dygraph = dataclasses.replace(FAILING[0], kernel="composed")
    absolute, relative = _oracle(parity.run_dygraph(dygraph, "builtin"),
                                 parity.run_dygraph(dygraph, "ours"))
    assert rows[0].split()[3:5] == [f"{absolute:.3g}", f"{relative:.3g}"]


def test_an_error_is_a_failing_row_with_its_message_below(monkeypatch):
    def comparisons(case):
        raise RuntimeError("the shapes should be equal")

    monkeypatch.setattr(parity, "comparisons", comparisons)
    passed, row, details = parity.parity_row(parity.Case(), "cpu")
    assert not passed and " FAIL " in row and "equal" not in row
    assert details == ["    RuntimeError: the shapes should be equal"]
