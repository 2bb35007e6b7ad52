"""A static-graph (Executor) training loop with paddle_momentum and an LR scheduler.

Regression of y = 2*x1 - 3.4*x2 + 4.2 with a small MLP, built as a ``paddle.static.Program``.
The Executor writes the scheduler's value before every run; we call ``scheduler.step()``
between runs, exactly as with ``paddle.optimizer.Momentum``. Run it directly to see the
built-in and ours side by side:

    python examples/static_graph.py [--legacy-ir] [--steps N] [--plot static_graph.png]
"""

from __future__ import annotations

import argparse

import numpy as np
import paddle

from paddle_momentum import Momentum


def make_batches(steps, batch_size=32, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.standard_normal((batch_size, 2)).astype("float32")
        y = (x @ np.array([[2.0], [-3.4]], dtype="float32") + 4.2).astype("float32")
        yield x, y


def train(optimizer_class=Momentum, steps=60, legacy_ir=False, seed=1):
    """Build and train the program; returns the loss of every step (floats)."""
    paddle.enable_static()
    ir = paddle.pir_utils.OldIrGuard() if legacy_ir else paddle.pir_utils.IrGuard()
    try:
        with ir, paddle.utils.unique_name.guard(), \
                paddle.static.scope_guard(paddle.static.Scope()):
            main, startup = paddle.static.Program(), paddle.static.Program()
            main.random_seed = startup.random_seed = seed
            with paddle.static.program_guard(main, startup):
                x = paddle.static.data("x", [None, 2], "float32")
                y = paddle.static.data("y", [None, 1], "float32")
                hidden = paddle.nn.functional.relu(paddle.static.nn.fc(x, 16))
                prediction = paddle.static.nn.fc(hidden, 1)
                loss = paddle.mean(paddle.square(prediction - y))
                scheduler = paddle.optimizer.lr.StepDecay(0.05, step_size=20, gamma=0.5)
                optimizer = optimizer_class(learning_rate=scheduler, momentum=0.9,
                                            use_nesterov=True, weight_decay=1e-4)
                optimizer.minimize(loss)
            executor = paddle.static.Executor(paddle.CPUPlace())
            executor.run(startup)
            losses = []
            for x_value, y_value in make_batches(steps):
                (value,) = executor.run(main, feed={"x": x_value, "y": y_value},
                                        fetch_list=[loss])
                scheduler.step()
                losses.append(float(value))
            return losses
    finally:
        paddle.disable_static()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legacy-ir", action="store_true", help="build under the legacy IR")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--plot", default="static_graph.png", help="PNG to write")
    args = parser.parse_args()
    ours = train(Momentum, args.steps, args.legacy_ir)
    builtin = train(paddle.optimizer.Momentum, args.steps, args.legacy_ir)
    for step in range(0, args.steps, max(1, args.steps // 10)):
        print(f"step {step:4d}  loss ours {ours[step]:.6f}  built-in {builtin[step]:.6f}")
    print(f"final loss {ours[-1]:.6f}; identical to the built-in: {ours == builtin}")
    from paddle_momentum.tools.plotting import save_loss_plot

    save_loss_plot({"paddle_momentum": ours, "paddle.optimizer.Momentum (built-in)": builtin},
                   args.plot, "Static graph (Executor): MLP regression, StepDecay, Nesterov")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
