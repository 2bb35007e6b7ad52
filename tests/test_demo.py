"""The README's main job: the demo trains both optimizers bit-identically and learns the line."""

import subprocess
import sys

import numpy as np
import pytest

from paddle_momentum.tools import demo


def test_demo_is_bit_identical_and_recovers_the_generating_line():
    results = demo.run(out=lambda line: None)
    assert [r["momentum"] for r in results] == [0.99, 0.9, 0.5]
    for result in results:
        assert result["max_abs_diff"] == 0.0
        assert result["builtin_losses"] == result["our_losses"]
    for result in results[1:]:  # 0.99 oscillates within 3 epochs, as in the d2l.ai chapter
        # noise std is 0.01, so the least-squares fit is within a few 1e-3 of the truth
        np.testing.assert_allclose(result["weight"], demo.TRUE_W, atol=5e-3)
        assert abs(result["bias"] - demo.TRUE_B) < 5e-3
        assert result["our_losses"][-1] < 1e-4 < result["our_losses"][0]


def test_cli_demo_exit_code_and_output():
    done = subprocess.run([sys.executable, "-m", "paddle_momentum", "demo", "--momentum", "0.9"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "bit-identical" in done.stdout
    assert done.stdout.count("0.9 ") == 2
    # (Paddle's import-time note about ccache is not the demo's to show; the kernel is built
    # by the tests' session already, so the demo has nothing else to say on stderr)
    assert "ccache" not in done.stderr and "Warning" not in done.stderr, done.stderr


def test_demos_build_the_kernel_before_they_print(monkeypatch):
    """A first run's compiler messages come before a demo's table, not between its rows."""
    events = []
    monkeypatch.setattr(demo, "prepare_kernel", lambda: events.append("prepare"))
    demo.run(momenta=(0.9,), out=lambda line: events.append("print"))
    assert events[0] == "prepare" and events.count("prepare") == 1 and "print" in events
    pytest.importorskip("sklearn")
    from paddle_momentum.tools import mlp_demo

    events.clear()
    mlp_demo.run(dataset="digits", epochs=1, out=lambda line: events.append("print"),
                 progress=False)
    assert events[0] == "prepare" and events.count("prepare") == 1 and "print" in events


def test_largest_difference_counts_a_nan_on_both_sides_as_none():
    """The demo's verdict: the same NaN in both runs (a diverged setting, momentum 2) is no
    difference; a NaN on one side is; otherwise the largest |a - e|, as numpy computes it."""
    import numpy as np
    import paddle

    from paddle_momentum.tools.demo import largest_difference

    nan = float("nan")
    expected = [paddle.to_tensor([1.0, nan, 3.0]), paddle.to_tensor([0.5])]
    assert largest_difference(expected, [paddle.to_tensor([1.0, nan, 3.0]),
                                         paddle.to_tensor([0.5])]) == (0.0, True)
    worst, identical = largest_difference(expected, [paddle.to_tensor([1.0, 2.0, 3.0]),
                                                     paddle.to_tensor([0.5])])
    assert np.isnan(worst) and not identical
    actual = [paddle.to_tensor([1.25, nan, 2.0]), paddle.to_tensor([0.75])]
    oracle = max(float(np.nanmax(np.abs(a.numpy() - e.numpy())))
                 for a, e in zip(actual, expected))
    assert largest_difference(expected, actual) == (oracle, False)
