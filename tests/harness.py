"""Test helpers. The side-by-side runner and the matrix live in ``paddle_momentum.tools.parity``
(also behind ``python -m paddle_momentum parity``); this adds the bitwise assertion."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from paddle_momentum.tools.parity import (  # noqa: F401  (re-exported for the tests)
    OPTIMIZERS, Case, batch_arrays, batches, build_model, make_builtin, make_optimizer,
    run_dygraph, run_static, snapshot, train_step)


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


def run_python(script, cwd, cache, **env):
    """``python -c script`` in a fresh process with the kernel cache ``cache`` (and ``env``);
    its stdout and stderr, after checking that it succeeded."""
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=600,
                          env=dict(os.environ, PADDLE_MOMENTUM_CACHE=str(cache), **env))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr
