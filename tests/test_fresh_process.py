"""Each optimizer in its own fresh process, as users run them (``fresh_worker.py``): the same
seed-0 training must give the same parameters, bit for bit, and leave Paddle's global world
(random generators, unique-name counters, default programs, mode, stdout, warnings filters)
exactly as the built-in leaves it. An in-process test cannot see a draw from the random
generator or a used-up unique name: the next layer's initial weights, or its name in a
checkpoint, would differ.

The workers run from a temporary directory, so they import the installed package (in CI, the
one the README's command installed), not the checkout.
"""

import json
import os
import subprocess
import sys

import pytest

from fresh_worker import SCENARIOS

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fresh_worker.py")


def _run(tmp_path, *args, cache=None):
    env = dict(os.environ)
    if cache is not None:
        env["PADDLE_MOMENTUM_CACHE"] = str(cache)
    done = subprocess.run([sys.executable, WORKER, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_BUILTIN = {}


def _builtin(tmp_path, scenario):
    if scenario not in _BUILTIN:
        _BUILTIN[scenario] = _run(tmp_path, "builtin", scenario)
    return _BUILTIN[scenario]


def _assert_same_run(reference, ours):
    for key, value in reference["state"].items():
        assert ours["state"][key] == value, f"global state {key!r} differs"
    assert ours["late_layer"] == reference["late_layer"]
    assert ours["params"] == reference["params"], (
        f"parameters differ: sums {ours['param_sums']} vs {reference['param_sums']}")


@pytest.mark.parametrize("kernel", ["fused", "composed"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fresh_process_matches_builtin(tmp_path, scenario, kernel):
    _assert_same_run(_builtin(tmp_path, scenario), _run(tmp_path, "ours", scenario, kernel))


def test_first_use_on_an_empty_cache_matches_builtin(tmp_path):
    """The first process compiles the kernel and the gradient table (and checks them): none
    of that may leave a trace in the training."""
    ours = _run(tmp_path, "ours", "plain", "fused", cache=tmp_path / "empty-cache")
    assert any((tmp_path / "empty-cache").glob("*/**/*.so")), "nothing was built"
    _assert_same_run(_builtin(tmp_path, "plain"), ours)
