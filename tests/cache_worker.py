"""A process that makes its first optimizer steps with ours (kernel 'auto') and with the
built-in, for ``test_kernel_cache.py``: ``THREADS`` threads (default 2) each train their own
model at once, so the kernel is loaded (or built) while another thread wants it too. Prints
one JSON line: whether the fused kernel and the gradient table are in use, whether every
thread's parameters equal the built-in's bit for bit, and whether ``sys.stdout`` is intact.

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
from paddle_momentum import _kernel  # noqa: E402

SHAPES = [[64, 32], [32], [32, 8], [8], [300, 300]]


def train(kind, seed):
    rng = np.random.default_rng(seed)
    with paddle.utils.unique_name.guard():
        params = [paddle.create_parameter(shape, "float32") for shape in SHAPES]
    for param in params:
        param.set_value(rng.standard_normal(param.shape).astype("float32"))
    cls = paddle.optimizer.Momentum if kind == "builtin" else paddle_momentum.Momentum
    optimizer = cls(0.05, 0.9, parameters=params, weight_decay=1e-3)
    for step in range(3):
        grads = [rng.standard_normal(p.shape).astype("float32") for p in params]
        paddle.add_n([(p * paddle.to_tensor(g)).sum() for p, g in zip(params, grads)]).backward()
        optimizer.step()
        optimizer.clear_grad()
    return [p.numpy() for p in params]


def main():
    count = int(os.environ.get("THREADS", "2"))
    barrier = threading.Barrier(count)
    results, errors = {}, []

    def run(index):
        try:
            barrier.wait()
            results[index] = train("ours", index)
        except Exception as error:  # reported below
            errors.append(repr(error))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    same = not errors and all(
        all(np.array_equal(a, b) for a, b in zip(results[i], train("builtin", i)))
        for i in range(count))
    print(json.dumps({"kernel": _kernel.load() is not None,
                      "table": _kernel.gradient_table() is not None,
                      "same_as_builtin": same, "errors": errors,
                      "stdout_intact": sys.stdout is sys.__stdout__}))


if __name__ == "__main__":
    main()
