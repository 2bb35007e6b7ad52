"""Multi-process data parallel on CPU (gloo): every rank ends identical, and equal to the same
run with the built-in."""

import os
import sys

import numpy as np
import paddle.distributed as dist
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import dist_worker  # noqa: E402


def _arrays(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.mark.parametrize("use_fleet", [False, True], ids=["DataParallel", "fleet"])
def test_two_ranks_identical_and_equal_to_builtin(tmp_path, use_fleet):
    for kind in ("builtin", "ours"):
        dist.spawn(dist_worker.train, args=(kind, str(tmp_path), use_fleet), nprocs=2,
                   backend="gloo")
    runs = {(kind, rank): _arrays(tmp_path / f"{kind}_rank{rank}.npz")
            for kind in ("builtin", "ours") for rank in (0, 1)}
    reference = runs[("builtin", 0)]
    for key, arrays in runs.items():
        for i, (a, b) in enumerate(zip(reference, arrays)):
            assert a.dtype == b.dtype and np.array_equal(a, b), f"{key} parameter {i}"
