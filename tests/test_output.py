"""What the command line and the test run print: help without importing Paddle, and a warnings
summary from which only Paddle's own known warnings are filtered."""

import configparser
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _environment():
    """This process's environment without a PYTHONWARNINGS that would change what is shown."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONWARNINGS"}


def _imported_modules(importtime_stderr: str):
    """The module names listed by ``python -X importtime``."""
    return [line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and "|" in line]


def test_help_imports_no_paddle():
    for command in (["--help"], ["demo", "--help"], ["build", "--help"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "paddle_momentum",
                               *command], capture_output=True, text=True, timeout=120,
                              env=_environment())
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("usage: python -m paddle_momentum")
        paddle_modules = [name for name in _imported_modules(done.stderr)
                          if name == "paddle" or name.startswith("paddle.")]
        assert paddle_modules == [], f"{command} imported {paddle_modules[:3]}"
        assert "No ccache found" not in done.stderr


def _filters():
    config = configparser.RawConfigParser()
    config.read(ROOT / "setup.cfg")
    return [line.strip() for line in config["tool:pytest"]["filterwarnings"].splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_every_filter_ignores_one_paddle_message_of_one_paddle_module():
    filters = _filters()
    assert filters
    for entry in filters:
        action, message, category, module = entry.split(":")
        assert action == "ignore" and message and category.endswith("Warning"), entry
        assert module.startswith("paddle\\.") and module.endswith("$"), entry


EMITS_WARNINGS = textwrap.dedent('''
    import os
    import warnings

    import numpy as np
    import paddle

    import paddle_momentum


    def test_emits_ours_paddles_and_its_own():
        param = paddle.to_tensor(np.ones(4, "float16"), stop_gradient=False)
        optimizer = paddle_momentum.Momentum(0.1, parameters=[param], kernel="composed")
        param.astype("float32").sum().backward()
        optimizer.step()  # ours: a float16 velocity without multi_precision
        path = os.path.join(os.path.dirname(__file__), "empty.pdparams")
        with warnings.catch_warnings(record=True) as caught:  # Paddle does warn here...
            warnings.simplefilter("always")
            paddle.save({}, path)
        assert any("state dict is empty" in str(w.message) for w in caught)
        paddle.save({}, path)  # ...and again, for the summary (which filters it out)
        warnings.warn("the test's own warning")
''')


def test_paddle_warnings_are_filtered_ours_and_the_tests_are_shown(tmp_path):
    test_file = tmp_path / "test_emits_warnings.py"
    test_file.write_text(EMITS_WARNINGS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "setup.cfg"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", str(test_file)],
        capture_output=True, text=True, timeout=300, env=_environment(), cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.split("warnings summary", 1)[-1]
    assert "warnings summary" in done.stdout
    # ours, from the package, and the test's own are shown
    assert "Accumulating with FP16/BF16" in summary
    assert os.path.join("paddle_momentum", "_state.py") in summary
    assert "the test's own warning" in summary
    # Paddle's, filtered by message and module
    assert "The input state dict is empty" not in summary
    assert "No ccache found" not in summary
