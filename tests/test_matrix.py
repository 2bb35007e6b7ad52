"""The differential matrix (``paddle_momentum.tools.parity.matrix_cases``): ours against the built-in,
every parameter and velocity after every step, for both kernels."""

import dataclasses

import numpy as np
import pytest

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
