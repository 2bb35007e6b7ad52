"""A process that makes its first use of ours (kernel 'auto') and trains with it and with the
built-in, for ``test_kernel_cache.py``: ``THREADS`` threads (default 2) construct their
optimizers at once, so the kernel and the gradient table are loaded (or built and checked)
while another thread wants them too; then each model trains. Prints one JSON line: whether
the fused kernel and the gradient table are in use, whether every model's parameters equal
the built-in's bit for bit, and whether ``sys.stdout`` is intact.

(The training itself runs one model at a time: Paddle's dygraph mode is not thread-safe, with
the built-in as with ours: ``no_grad`` flips a process-wide flag, for one.)

With ``READ_ONLY_CACHE=1`` every attempt to write below ``$PADDLE_MOMENTUM_CACHE`` raises
PermissionError, as on a read-only file system (root ignores permission bits).
"""

import builtins
import json
import os
import sys
import threading

import numpy as np


def _refuse_writes_below(root):
    real_open, real_mkdir = builtins.open, os.mkdir

    def inside(path):
        return os.path.abspath(os.fspath(path)).startswith(root)

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and inside(file) and set(mode) & set("wax+"):
            raise PermissionError(30, "Read-only file system", os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if inside(path):
            raise PermissionError(30, "Read-only file system", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    builtins.open, os.mkdir = guarded_open, guarded_mkdir


if os.environ.get("READ_ONLY_CACHE") == "1":
    _refuse_writes_below(os.path.abspath(os.environ["PADDLE_MOMENTUM_CACHE"]))

import paddle  # noqa: E402

import paddle_momentum  # noqa: E402
from paddle_momentum import _kernel, _rules  # noqa: E402

SHAPES = [[64, 32], [32], [32, 8], [8], [300, 300]]


def model(seed):
    with paddle.utils.unique_name.guard():
        params = [paddle.create_parameter(shape, "float32") for shape in SHAPES]
    rng = np.random.default_rng(seed)
    for param in params:
        param.set_value(rng.standard_normal(param.shape).astype("float32"))
    return params


def optimizer_for(kind, params):
    cls = paddle.optimizer.Momentum if kind == "builtin" else paddle_momentum.Momentum
    return cls(0.05, 0.9, parameters=params, weight_decay=1e-3)


def train(params, optimizer, seed):
    rng = np.random.default_rng(1000 + seed)
    for step in range(3):
        grads = [rng.standard_normal(p.shape).astype("float32") for p in params]
        paddle.add_n([(p * paddle.to_tensor(g)).sum() for p, g in zip(params, grads)]).backward()
        optimizer.step()
        optimizer.clear_grad()
    return [p.numpy() for p in params]


def main():
    count = int(os.environ.get("THREADS", "2"))
    models = [model(i) for i in range(count)]
    barrier = threading.Barrier(count)
    optimizers, errors = {}, []

    def first_use(index):
        try:
            barrier.wait()
            optimizers[index] = optimizer_for("ours", models[index])
            _kernel.gradient_table()
        except Exception as error:  # reported below
            errors.append(repr(error))

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    same = not errors
    for i in range(count if same else 0):
        ours = train(models[i], optimizers[i], i)
        reference_params = model(i)
        reference = train(reference_params, optimizer_for("builtin", reference_params), i)
        same = same and all(np.array_equal(a, b) for a, b in zip(ours, reference))
    print(json.dumps({"kernel": _rules.load() is not None,
                      "table": _kernel.gradient_table() is not None,
                      "same_as_builtin": same, "errors": errors,
                      "stdout_intact": sys.stdout is sys.__stdout__}))


if __name__ == "__main__":
    main()
