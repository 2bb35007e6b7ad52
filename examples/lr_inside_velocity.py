"""The seeds' momentum as your own rule: the learning rate inside the velocity.

Dive into Deep Learning's momentum chapter (MXNet's SGD) and the PyTorch tutorial write
momentum as ``v = mu*v + lr*g; p = p - v``; Paddle (and paddle_momentum by default) as
``v = mu*v + g; p = p - lr*v``. With a constant learning rate the two are the same method;
when the learning rate decays, as in the chapter's experiment (lr 0.2, x0.1 from the third
epoch), Paddle's applies the new rate to the whole velocity at once, the seeds' only to the
gradients that follow. This script trains the chapter's linear regression (embedded data,
batch 10, momentum 0.99, 0.9 and 0.5) both ways, the seeds' formulation passed to
``paddle_momentum.Momentum`` as ``rule=``, checks that run against a numpy replay of the
chapter's formula on the same gradients (bit for bit), and plots both losses.

    python examples/lr_inside_velocity.py --plot lr_inside_velocity.png
"""

import argparse
import functools

import numpy as np
import paddle

from paddle_momentum import Momentum
from paddle_momentum.rule import attribute
from paddle_momentum.tools import demo


def lr_inside(param, grad, velocity, lr, *, momentum):
    r"""The seeds' momentum: :math:`v \leftarrow \mu v + \eta g`, :math:`p \leftarrow p - v`
    (``attribute`` takes mu as Paddle's kernels take it: rounded through float32)."""
    velocity = velocity * attribute(momentum, velocity) + lr * grad
    return param - velocity, velocity


def replay(initial, steps, momentum):
    """The chapter's formula in numpy (float32, each operation rounded as written), on the
    gradients and learning rates the run saw: the parameters after every step."""
    params = [p.copy() for p in initial]
    velocities = [np.zeros_like(p) for p in params]
    mu = np.float32(momentum)
    trajectory = []
    for lr, grads in steps:
        for i, grad in enumerate(grads):
            velocities[i] = velocities[i] * mu + np.float32(lr) * grad
            params[i] = params[i] - velocities[i]
        trajectory.append([p.copy() for p in params])
    return trajectory


def run(momenta=(0.99, 0.9, 0.5), plot=None, out=print):
    features, labels = demo.make_dataset()
    curves, replayed_equal = {}, True
    out("momentum  formulation            final loss")
    for momentum in momenta:
        for label, optimizer_class in (
                ("Paddle's (lr outside)", Momentum),
                ("seeds' (lr inside)", functools.partial(Momentum, rule=lr_inside))):
            steps, trajectory, losses, initial = [], [], [], []

            def record(model, optimizer):  # (before each step: what the update will use)
                if not initial:
                    initial.extend(p.numpy().copy() for p in model.parameters())
                steps.append((optimizer.get_lr(),
                              [p.grad.numpy().copy() for p in model.parameters()]))

            def after(model):
                trajectory.append([p.numpy().copy() for p in model.parameters()])

            model, _ = demo.train(optimizer_class, momentum, features, labels,
                                  on_batch=losses.append, before_step=record, after_step=after)
            curves[f"{label}, momentum {momentum}"] = losses
            if optimizer_class is not Momentum:
                oracle = replay(initial, steps, momentum)
                replayed_equal &= all(np.array_equal(a, b) for got, wanted in
                                      zip(trajectory, oracle) for a, b in zip(got, wanted))
            out(f"{momentum:<9} {label:<22} {losses[-1]:.6e}")
    out(f"the lr-inside runs are bit-identical to the numpy replay of the chapter's formula: "
        f"{replayed_equal}")
    if plot:
        from paddle_momentum.tools.plotting import save_loss_plot

        save_loss_plot(curves, plot, "lr outside (Paddle) vs inside (d2l) the velocity; "
                       "lr 0.2, x0.1 from epoch 3", xlabel="batch")
        out(f"plot: {plot}")
    return replayed_equal


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", default="lr_inside_velocity.png", help="PNG to write")
    paddle.set_device("cpu")
    raise SystemExit(0 if run(plot=parser.parse_args().plot) else 1)
