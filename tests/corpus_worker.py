"""One case of the rule corpus (tests/test_rule_corpus.py), in a fresh process: trains with
``Momentum(rule=...)`` (a rule of ``user_rules``, or the package's own) under the default
implementation and ``kernel="composed"``, and prints what happened as JSON.

    python corpus_worker.py CASE_JSON

CASE_JSON: {"rule": name in user_rules or null (the package's), "change": [module, name,
value name or number] or null (applied after the second step), "background": bool (no
waiting for the kernel before training: the composed ops run until it is built)}.
"""

import inspect
import json
import sys
import time
import warnings

import numpy as np
import paddle

import paddle_momentum
from paddle_momentum import implementations, rule as package_rule

composed_calls = []
_composed = implementations.composed
_registering = []  # (a new kernel's self-check runs the composed ops: not a step's)


def _counting(*arguments, **keywords):
    if not _registering:
        composed_calls.append(1)
    return _composed(*arguments, **keywords)


def register(chosen):
    """Wait for the kernel of ``chosen`` (built now if need be, and checked)."""
    _registering.append(1)
    try:
        paddle_momentum.register_ops(rule=chosen)
    finally:
        _registering.pop()


implementations.composed = _counting
case = json.loads(sys.argv[1])
if case["rule"]:
    import user_rules  # (beside this script, as a researcher's module)

    rule = getattr(user_rules, case["rule"])
else:
    rule = None


def option_sets():
    """The settings the rule can take: none, the gradient ops (every rule gets rule.py's),
    and Nesterov with an L2 decay where the rule takes them."""
    sets = {"plain": {}, "l1-clip": {"weight_decay": paddle.regularizer.L1Decay(0.01),
                                     "grad_clip": paddle.nn.ClipGradByValue(0.05)}}
    parameters = inspect.signature(rule or package_rule.momentum_update).parameters
    takes_all = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    if takes_all or "use_nesterov" in parameters:
        sets["nesterov"] = {"use_nesterov": True}
    if takes_all or "l2_coeff" in parameters:
        sets["nesterov"] = dict(sets.get("nesterov", {}), weight_decay=0.01)
    if "nu" in parameters:  # (a setting declared in the edited checkout)
        sets["new-setting"] = {"nu": 0.25}
    return sets


def apply_change():
    module_name, name, value = case["change"]
    module = {"user_rules": sys.modules.get("user_rules"), "rule": package_rule}[module_name]
    original = getattr(module, name)
    if value == "halved":
        replacement = _halved(original)
    elif value == "float":
        replacement = float
    else:
        replacement = getattr(module, value) if isinstance(value, str) else value
    setattr(module, name, replacement)
    return lambda: setattr(module, name, original)


def _halved(original):
    def halved(param, grad, velocity, lr, **options):
        new_param, new_velocity = original(param, grad, velocity, lr, **options)
        return new_param, new_velocity * 0.5
    return halved


def train(kernel, options, steps=4, wait=True):
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(16, 32), paddle.nn.Tanh(),
                                 paddle.nn.Linear(32, 4))
    optimizer = paddle_momentum.Momentum(0.1, 0.9, parameters=model.parameters(),
                                         kernel=kernel, rule=rule, **options)
    data = paddle.to_tensor(np.random.RandomState(1).standard_normal((8, 16)), "float32")
    restore, times = None, []
    if wait and kernel == "auto":
        register(rule)
    for step in range(steps):
        if step == 2 and case["change"]:
            restore = apply_change()
            if wait and kernel == "auto":  # (the new translation's kernel, built now)
                register(rule or package_rule.momentum_update)
        model(data).square().mean().backward()
        began = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - began)
        optimizer.clear_grad()
    if restore:
        restore()
    return [p.numpy().tobytes().hex() for p in model.parameters()], times


def special_values(kernel, dtype):
    """Gradients at 0.1 exactly and around it (comparisons with numbers in the tensor's type)."""
    values = np.array([0.1, 0.3, 1 / 3, -0.1, 0.0, -0.0, 2.5, 1e-8, -7.0], dtype)
    param = paddle.create_parameter([values.size], dtype)
    param.set_value(values)
    optimizer = paddle_momentum.Momentum(0.1, 0.9, parameters=[param], kernel=kernel, rule=rule)
    if kernel == "auto":
        register(rule)
    for _ in range(2):
        param.grad = paddle.to_tensor(values)
        optimizer.step()
    return [param.numpy().tobytes().hex()]


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    results = {}
    for key, options in ({} if case.get("background") else option_sets()).items():
        composed_calls.clear()
        auto, _ = train("auto", options)
        results[key] = {"auto": auto, "auto_composed_calls": len(composed_calls),
                        "composed": train("composed", options)[0]}
    for dtype in () if case.get("background") else ("float32", "float64"):
        composed_calls.clear()
        results["special-" + dtype] = {"auto": special_values("auto", dtype),
                                       "auto_composed_calls": len(composed_calls),
                                       "composed": special_values("composed", dtype)}
    report = {"results": results}
    if case.get("background"):  # a new rule, not waited for: how the first steps go
        composed_calls.clear()
        first, first_times = train("auto", {}, steps=2, wait=False)
        calls_while_building = len(composed_calls)
        steps = 0
        while paddle_momentum._rules.Rule(rule).kernel() is None and steps < 600:
            time.sleep(0.2)  # (the build runs in the background)
            steps += 1
        composed_calls.clear()
        after, _ = train("auto", {}, steps=2, wait=False)
        calls_after = len(composed_calls)
        composed, composed_times = train("composed", {}, steps=2)
        report["background"] = {"first": first, "after": after, "composed": composed,
                                 "first_step_s": first_times[0],
                                 "composed_step_s": composed_times[0],
                                 "composed_calls_while_building": calls_while_building,
                                 "composed_calls_after": calls_after}
report.update(module_file=paddle_momentum.__file__,
              warnings=[{"message": str(w.message), "file": w.filename, "line": w.lineno}
                        for w in caught if "paddle_momentum" in str(w.message)])
print(json.dumps(report))
