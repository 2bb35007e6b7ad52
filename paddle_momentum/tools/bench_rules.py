"""``python -m paddle_momentum bench --rules``: rules of one's own (``Momentum(rule=...)``) on
the fused kernel against the composed ops, 1000 x [512] float32, in one process; and the
first step of a rule never built before (a fresh process, an empty kernel cache), whose
kernel builds in the background while the composed ops run.

The rules are written as a researcher writes them, in this module: the seeds' lr-inside
momentum, a wrapper of the package's rule, and QHM with a helper and a module constant.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import paddle

import paddle_momentum
from paddle_momentum.rule import attribute, momentum_update

from .bench import time_interleaved

SHAPES = [[512]] * 1000
NU = 0.7


def lr_inside(param, grad, velocity, lr, *, momentum):
    velocity = velocity * attribute(momentum, velocity) + lr * grad
    return param - velocity, velocity


def half_velocity(param, grad, velocity, lr, **options):
    new_param, new_velocity = momentum_update(param, grad, velocity, lr, **options)
    return new_param, new_velocity * 0.5


def _mix(velocity, grad, nu):
    return velocity * nu + grad * (1.0 - nu)


def qhm(param, grad, velocity, lr, *, momentum):
    velocity = velocity * attribute(momentum, velocity) + grad
    return param - lr * _mix(velocity, grad, NU), velocity


RULES = {"lr_inside": lr_inside, "half_velocity (wrapper)": half_velocity,
         "qhm (helper, constant)": qhm}


def _stepper(rule, kernel):
    rng = np.random.default_rng(0)
    params = [paddle.to_tensor(rng.standard_normal(shape).astype("float32"),
                               stop_gradient=False) for shape in SHAPES]
    grads = [paddle.to_tensor(rng.standard_normal(shape).astype("float32") * 1e-3)
             for shape in SHAPES]
    for param, grad in zip(params, grads):
        param.grad = grad
    optimizer = paddle_momentum.Momentum(0.01, 0.9, parameters=params, kernel=kernel, rule=rule)
    return optimizer.step


def run(steps=15, out=print):
    out(f"# rules of one's own: {len(SHAPES)} x {SHAPES[0]} float32, median of {steps} "
        "interleaved steps, ratio = default (fused kernel) / kernel='composed'")
    out("| rule | default | composed | ratio |\n|---|---|---|---|")
    for label, rule in RULES.items():
        paddle_momentum.register_ops(rule=rule)  # (built and checked before timing)
        steppers = {"default": _stepper(rule, "auto"), "composed": _stepper(rule, "composed")}
        times = time_interleaved(steppers, {name: steps for name in steppers})
        default, composed = (statistics.median(times[name]) for name in steppers)
        out(f"| {label} | {default * 1e3:.2f} ms | {composed * 1e3:.2f} ms | "
            f"{default / composed:.2f} |")


_FIRST_STEP = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import bench_rules_fresh as fresh
times = fresh.first_steps()
print(json.dumps(times))
"""

_FRESH_MODULE = '''
import time
import numpy as np
import paddle
import paddle_momentum
from paddle_momentum.rule import attribute

SALT = {salt!r}


def fresh_rule(param, grad, velocity, lr, *, momentum):
    velocity = velocity * attribute(momentum, velocity) + lr * grad * SALT
    return param - velocity, velocity


def first_steps():
    times = {{}}
    for kernel in ("composed", "auto"):
        rng = np.random.default_rng(0)
        params = [paddle.to_tensor(rng.standard_normal(512).astype("float32"),
                                   stop_gradient=False) for _ in range(1000)]
        for p in params:
            p.grad = paddle.ones([512], "float32")
        optimizer = paddle_momentum.Momentum(0.01, 0.9, parameters=params, kernel=kernel,
                                             rule=fresh_rule)
        began = time.perf_counter()
        optimizer.step()
        times[kernel] = time.perf_counter() - began
    return times
'''


def first_step(out=print):
    """The first step of a rule never built (a fresh process, an empty cache) against the
    composed ops' first step in the same process."""
    with tempfile.TemporaryDirectory() as scratch:
        with open(os.path.join(scratch, "bench_rules_fresh.py"), "w") as handle:
            handle.write(_FRESH_MODULE.format(salt=float(np.random.default_rng().uniform(1, 2))))
        done = subprocess.run([sys.executable, "-c", _FIRST_STEP, scratch], text=True,
                              capture_output=True, timeout=1200,
                              env=dict(os.environ, PADDLE_MOMENTUM_CACHE=os.path.join(
                                  scratch, "cache")))
        if done.returncode != 0:
            out(f"first step of a fresh rule: failed ({done.stderr[-500:]})")
            return None
        times = json.loads(done.stdout.strip().splitlines()[-1])
    out(f"first step of a rule never built (1000 x [512], empty cache): default "
        f"{times['auto'] * 1e3:.1f} ms (composed ops while its kernel builds in the "
        f"background), kernel='composed' {times['composed'] * 1e3:.1f} ms")
    return times
