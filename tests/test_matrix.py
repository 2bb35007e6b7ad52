"""The differential matrix: ours against the built-in, every parameter and velocity, every step."""

import itertools

import pytest

from harness import Case, assert_same, run_side_by_side

LR_KINDS = ["float", "tensor", "step", "cosine", "warmup"]
APIS = ["step", "minimize"]
CLEARS = ["zero", "none", "zero_grad", "accumulate"]
DTYPES = ["float32", "float64"]


def _cycle(values, index):
    return values[index % len(values)]


def _cases():
    cases = []
    # Core grid: dtype x nesterov x decay x clip, with the other axes rotated through.
    grid = itertools.product(DTYPES, [False, True], ["none", "float", "L2", "L1"],
                             ["none", "value", "norm", "global"])
    for i, (dtype, nesterov, decay, clip) in enumerate(grid):
        if dtype == "float64" and clip == "norm":
            continue  # Paddle has no float64 clip_by_norm kernel on CPU (test_errors covers it)
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
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_builtin_every_step(case, place):
    for step, (ref_params, ref_vel), (our_params, our_vel) in run_side_by_side(case):
        for i, (expected, actual) in enumerate(zip(ref_params, our_params)):
            assert_same(expected, actual, f"step {step} param {i}")
        for i, (expected, actual) in enumerate(zip(ref_vel, our_vel)):
            assert_same(expected, actual, f"step {step} velocity {i}")


def test_matrix_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
