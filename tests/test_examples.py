"""Every example runs (small settings) and writes its plot; a broken example is a failing test."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tmp_path):
    done = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _assert_png(path):
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000  # a drawn figure, not an empty canvas


@pytest.mark.parametrize("script,args,expect", [
    ("linear_regression.py", [], "max |ours - built-in|"),
    ("mlp_classifier.py", ["--epochs", "2"], "training accuracy"),
    ("static_graph.py", ["--steps", "20"], "identical to the built-in: True"),
    ("lr_inside_velocity.py", [], "replay of the chapter's formula: True"),
])
def test_example_script(script, args, expect, tmp_path):
    out = _run([os.path.join(ROOT, "examples", script), *args, "--plot", "out.png"], tmp_path)
    assert expect in out
    _assert_png(tmp_path / "out.png")


def test_cli_demo_all_with_plots(tmp_path):
    out = _run(["-m", "paddle_momentum", "demo", "--example", "all", "--plots", "plots"],
               tmp_path)
    assert "(bit-identical)" in out and "training accuracy" in out
    for name in ("linear_regression.png", "mlp_classifier.png"):
        _assert_png(tmp_path / "plots" / name)


def test_mlp_momentum_beats_plain_sgd():
    """The tutorial's point, checked on the data: momentum 0.9 ends with a lower loss and a
    higher accuracy than plain SGD at the same learning rate."""
    from paddle_momentum.tools import mlp_demo

    results, curves = mlp_demo.run(epochs=2, out=lambda line: None, progress=False)
    assert results["momentum 0.9"]["final_loss"] < results["plain SGD"]["final_loss"]
    assert results["momentum 0.9"]["accuracy"] > results["plain SGD"]["accuracy"]
    assert all(np.isfinite(curve).all() for curve in curves.values())
