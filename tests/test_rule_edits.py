"""The rule you read is the rule that runs: an edited ``rule.py`` runs on the fast path.

Each test copies the package to a scratch directory, edits its ``rule.py`` as a researcher
would, and trains in a fresh process with an empty kernel cache: the default implementation
(the fused kernel, generated from the edited rule and built once) must equal
``kernel="composed"`` (Paddle's ops running the edited rule) bit for bit, and differ from the
unedited rule's numbers (so the edit really runs); the default must not have used the composed
ops. A rule the generator cannot translate runs on the composed ops, after one warning.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import paddle_momentum

PACKAGE = pathlib.Path(paddle_momentum.__file__).resolve().parent

WORKER = textwrap.dedent('''
    import json, sys, warnings
    import numpy as np
    import paddle
    import paddle_momentum
    from paddle_momentum import _kernel, implementations

    composed_calls = []
    composed = implementations.composed
    implementations.composed = lambda *a, **k: (composed_calls.append(1), composed(*a, **k))[1]
    gradient_op_calls = []  # rule.py's gradient ops through Paddle's ops, after step 1
    for name in ("sign", "clip"):
        setattr(paddle, name, lambda *a, _op=getattr(paddle, name), **k: (
            gradient_op_calls.append(1), _op(*a, **k))[1])

    def train(kernel, steps=3, **options):
        paddle.seed(0)
        model = paddle.nn.Sequential(paddle.nn.Linear(16, 32), paddle.nn.Tanh(),
                                     paddle.nn.Linear(32, 4))
        optimizer = paddle_momentum.Momentum(0.1, 0.9, parameters=model.parameters(),
                                             kernel=kernel, **options)
        data = paddle.to_tensor(np.random.RandomState(1).standard_normal((8, 16)), "float32")
        for step in range(steps):
            model(data).square().mean().backward()
            optimizer.step()
            optimizer.clear_grad()
            if step == 0:  # (the first step's run before its bucket is built)
                gradient_op_calls.clear()
        return [p.numpy().tobytes().hex() for p in model.parameters()]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _kernel.load(), _kernel.gradient_table()  # (built and checked: the check runs composed)
        results = {}
        gradient_ops = {"weight_decay": paddle.regularizer.L1Decay(0.01),
                        "grad_clip": paddle.nn.ClipGradByValue(0.05)}
        for key, options in (("{}", {}), ("nesterov-l2", {"use_nesterov": True,
                                                          "weight_decay": 0.01}),
                             ("l1-clip", gradient_ops)):
            composed_calls.clear()
            results[key] = {"auto": train("auto", **options)}
            results[key]["auto_composed_calls"] = len(composed_calls)
            results[key]["auto_gradient_ops"] = len(gradient_op_calls)
            results[key]["composed"] = train("composed", **options)
            results[key]["composed_gradient_ops"] = len(gradient_op_calls)
        for dtype in ("float32", "float64"):  # gradients at 0.1 exactly, and around it
            values = np.array([0.1, 0.3, 1 / 3, -0.1, 0.0, -0.0, 2.5, 1e-8], dtype)
            for kernel in ("auto", "composed"):
                composed_calls.clear()
                param = paddle.create_parameter([values.size], dtype)
                param.set_value(values)
                optimizer = paddle_momentum.Momentum(0.1, 0.9, parameters=[param],
                                                     kernel=kernel)
                for _ in range(2):
                    param.grad = paddle.to_tensor(values)
                    optimizer.step()
                results.setdefault("special-" + dtype, {})[kernel] = \
                    [param.numpy().tobytes().hex()]
                if kernel == "auto":
                    results["special-" + dtype]["auto_composed_calls"] = len(composed_calls)
    print(json.dumps({"results": results, "kernel": _kernel.load() is not None,
                      "warnings": [str(w.message) for w in caught
                                   if "paddle_momentum" in str(w.message)]}))
''')

# The edits: name -> [(old text in rule.py, new text), ...]
EDITS = {
    # keep half of the new velocity (a tensor times a Python number: Paddle's scale op); then
    # a comparison with a number float32 cannot hold (Paddle compares in the tensor's dtype),
    # a division by a number, a number minus a tensor, and a name the generated C++ uses too;
    # and the gradient ops: half the L1 term, half the lower clip bound
    "half-velocity": [("    if decoupled_weight_decay:\n",
                       "    velocity = rnd(velocity * 0.5)\n"
                       "    s = rnd(velocity / 3.0)\n"
                       "    velocity = paddle.where(grad > 0.1, velocity, rnd(2.0 - s))\n"
                       "    if decoupled_weight_decay:\n"),
                      ("    return paddle.add_n([grad, paddle.scale(paddle.sign(param), "
                       "coeff)])\n",
                       "    return paddle.add_n([grad, paddle.sign(param) * (coeff * 0.5)])\n"),
                      ("    return paddle.clip(grad, low, high)\n",
                       "    return paddle.clip(grad, low * 0.5, high)\n")],
    # quasi-hyperbolic momentum, the worked example of docs/change_the_rule.md (a gradient
    # term added to the parameter update)
    "qhm": [("    if use_nesterov:\n"
             "        step = rnd(rnd(rnd(velocity * mu) + grad) * lr)\n"
             "    else:\n"
             "        step = rnd(lr * velocity)\n"
             "    return rnd(param - step), velocity\n",
             re.findall(r"```python\n(.*?)```", (pathlib.Path(__file__).resolve().parent.parent
                                                 / "docs" / "change_the_rule.md").read_text(),
                        re.S)[0])],
    # a Paddle call the generator has no C++ for
    "not-generated": [("    return rnd(param - step), velocity\n",
                       "    return rnd(param - paddle.tanh(step)), velocity\n")],
}


def _run(tmp_path, edit=None, cache=True):
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "paddle_momentum",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    rule = copy / "paddle_momentum" / "rule.py"
    for old, new in EDITS.get(edit, []):
        text = rule.read_text()
        assert text.count(old) == 1, f"the edit {edit!r} no longer applies to rule.py"
        rule.write_text(text.replace(old, new))
    env = {**os.environ, "PYTHONPATH": str(copy)}
    if cache:  # an empty cache (else the machine's: the unedited kernel is built there)
        env["PADDLE_MOMENTUM_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    builds = [line for line in done.stderr.splitlines() if "compiling the fused" in line]
    return json.loads(done.stdout.strip().splitlines()[-1]), builds


@pytest.fixture(scope="module")
def unedited(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("unedited"), cache=False)[0]


@pytest.mark.parametrize("edit", ["half-velocity", "qhm"])
def test_edited_rule_runs_on_the_fast_path(edit, tmp_path, unedited):
    report, builds = _run(tmp_path, edit)
    assert report["kernel"], report["warnings"]
    assert len(builds) == 1 and "rule.py" in builds[0], builds  # one build, and one line
    for key, result in report["results"].items():
        assert result["auto"] == result["composed"], f"{edit} {key}: fused != composed"
        assert result["auto_composed_calls"] == 0, f"{edit} {key}: the default used composed"
    gradient_ops = report["results"]["l1-clip"]  # (after the first step: in its bucket)
    assert gradient_ops["auto_gradient_ops"] == 0, f"{edit}: the default clipped in Python"
    assert gradient_ops["composed_gradient_ops"] > 0
    # (the QHM edit changes the plain step only; Nesterov's stays: equal, not changed)
    for key in ("{}", "l1-clip"):
        assert report["results"][key]["auto"] != unedited["results"][key]["auto"], \
            f"{edit} changed nothing ({key})"
    assert report["warnings"] == []


def test_unedited_rule_fused_equals_composed(unedited):
    for key, result in unedited["results"].items():
        assert result["auto"] == result["composed"], key
        assert result["auto_composed_calls"] == 0, key


def test_rule_the_generator_cannot_translate_runs_composed_with_one_warning(tmp_path,
                                                                          unedited):
    report, builds = _run(tmp_path, "not-generated")
    assert not report["kernel"] and builds == []
    assert len(report["warnings"]) == 1, report["warnings"]
    assert "paddle.tanh" in report["warnings"][0] and "rule.py:" in report["warnings"][0]
    for key, result in report["results"].items():
        assert result["auto"] == result["composed"], key
        assert result["auto"] != unedited["results"][key]["auto"], key


def test_rule_replaced_in_the_process_runs_composed_with_one_warning(monkeypatch):
    """A rule function replaced after the kernel was built from the old one (a monkeypatch,
    a reload) is never run by the stale kernel: the composed ops run it, after one warning."""
    import numpy as np
    import paddle

    from paddle_momentum import _generate, _kernel, rule

    if _kernel.load() is None:
        pytest.skip("no fused kernel here")
    original = rule.momentum_update

    def halved(*args, **kwargs):  # the rule, then half of the new velocity kept
        new_param, new_velocity = original(*args, **kwargs)
        return new_param, new_velocity * 0.5

    def train(kernel, replace=True):
        paddle.seed(0)
        params = [paddle.create_parameter([64], "float32") for _ in range(3)]
        optimizer = paddle_momentum.Momentum(0.1, 0.9, parameters=params, kernel=kernel)
        for step in range(3):
            for p in params:
                p.grad = paddle.full([64], 0.5 + step, "float32")
            optimizer.step()
            if step == 0 and replace:  # replaced after the first (fused) step
                monkeypatch.setattr(rule, "momentum_update", halved)
        monkeypatch.setattr(rule, "momentum_update", original)
        return [p.numpy() for p in params]

    with pytest.warns(RuntimeWarning, match="was replaced after the fused kernel") as caught:
        default = train("auto")
        composed = train("composed")
    assert sum("was replaced" in str(w.message) for w in caught) == 1
    monkeypatch.setattr(_kernel, "_GENERATED_FROM", [(original,) + _generate.rule_functions()[1:]])
    plain = train("composed", replace=False)
    assert all(np.array_equal(a, b) for a, b in zip(default, composed))
    assert not any(np.array_equal(a, b) for a, b in zip(default, plain))
