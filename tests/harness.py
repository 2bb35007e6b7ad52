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
    """Bitwise equality, zero signs included (NaNs equal whatever their payload: see
    tests/test_nan_bits.py for those), with the first differing index in the message."""
    assert (expected is None) == (actual is None), f"{where}: one side has no value"
    if expected is None:
        return
    assert expected.dtype == actual.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    expected, actual = np.asarray(expected), np.asarray(actual)
    assert expected.shape == actual.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    differ = expected != actual
    if expected.dtype.kind == "f":
        nan = np.isnan(expected)
        differ = (nan != np.isnan(actual)) | (~nan & ((expected != actual)
                                                       | (np.signbit(expected)
                                                          != np.signbit(actual))))
    if np.any(differ):
        diff = tuple(np.argwhere(differ)[0]) if differ.ndim else ()
        raise AssertionError(
            f"{where}: first difference at {diff}: expected "
            f"{expected[diff]!r}, got {actual[diff]!r}"
        )


def run_python(script, cwd, cache, **env):
    """``python -c script`` in a fresh process with the kernel cache ``cache`` (and ``env``);
    its stdout and stderr, after checking that it succeeded."""
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=600,
                          env=dict(os.environ, PADDLE_MOMENTUM_CACHE=str(cache), **env))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr
