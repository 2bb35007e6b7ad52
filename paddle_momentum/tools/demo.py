"""The seed experiment of d2l.ai's momentum chapter (Dive into Deep Learning), trained with the built-in and with ours.

Linear regression on y = 2*x1 - 3.4*x2 + 4.2 + N(0, 0.01^2) noise, 1000 examples generated from
a fixed seed (the embedded dataset), batch 10, lr 0.2, 3 epochs, lr multiplied by 0.1 from the
third epoch (index 2), for momentum 0.99, 0.9 and 0.5.
"""

from __future__ import annotations

import numpy as np
import paddle

from ..optimizer import Momentum

TRUE_W = (2.0, -3.4)
TRUE_B = 4.2
LR = 0.2


def make_dataset(num_examples=1000, seed=0):
    """The embedded default dataset: features and noisy targets, float32."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((num_examples, 2)).astype("float32")
    labels = features @ np.array(TRUE_W, dtype="float32") + TRUE_B
    labels += rng.normal(scale=0.01, size=labels.shape)
    return features, labels.astype("float32").reshape(-1, 1)


def prepare_kernel() -> None:
    """Build (a first run, about 30 s) or load what a step of ours uses, the fused kernel and
    its gradient table, now, as ``python -m paddle_momentum build`` does: called before a
    demo prints anything, so that the compiler's messages come before its table, not inside
    it (the table alone would otherwise be built at the first step)."""
    from .. import _kernel, register_ops

    if register_ops():
        _kernel.gradient_table()


def largest_difference(expected, actual):
    """``(the largest |a - e| over the two lists of tensors, whether their bits are
    identical)``: a NaN on both sides is no difference (the same diverged run), a NaN on one
    side a NaN difference."""
    largest, identical = 0.0, True
    for e, a in zip(expected, actual):
        e, a = e.numpy(), a.numpy()
        identical = identical and e.tobytes() == a.tobytes()
        differ = ~((e == a) | (np.isnan(e) & np.isnan(a)))
        with np.errstate(invalid="ignore"):
            largest = max(largest, float(np.max(np.abs(a - e), where=differ, initial=0.0)),
                          key=lambda x: (np.isnan(x), x))
    return largest, identical


def _loss(model, x, y):
    return 0.5 * paddle.mean(paddle.square(model(x) - y))


def train(optimizer_class, momentum, features, labels, *, lr=LR, batch_size=10, epochs=3,
          decay_epoch=2, seed=1, on_batch=None, before_step=None, after_step=None):
    """Train a Linear(2, 1); returns the model and the full-dataset loss after every epoch.
    ``before_step(model, optimizer)`` and ``after_step(model)`` are called around each step."""
    paddle.seed(seed)
    model = paddle.nn.Linear(2, 1, weight_attr=paddle.nn.initializer.Normal(std=1.0))
    optimizer = optimizer_class(learning_rate=lr, momentum=momentum,
                                parameters=model.parameters())
    x_all, y_all = paddle.to_tensor(features), paddle.to_tensor(labels)
    order_rng = np.random.default_rng(seed)
    losses = [float(_loss(model, x_all, y_all))]
    for epoch in range(epochs):
        if epoch >= decay_epoch:
            optimizer.set_lr(optimizer.get_lr() * 0.1)
        order = order_rng.permutation(len(features))
        for start in range(0, len(features), batch_size):
            index = paddle.to_tensor(order[start:start + batch_size])
            loss = _loss(model, paddle.gather(x_all, index), paddle.gather(y_all, index))
            loss.backward()
            if before_step is not None:
                before_step(model, optimizer)
            optimizer.step()
            if after_step is not None:
                after_step(model)
            optimizer.clear_grad()
            if on_batch is not None:
                on_batch(float(loss))
        losses.append(float(_loss(model, x_all, y_all)))
    return model, losses


def run(momenta=(0.99, 0.9, 0.5), out=print, plot=None):
    """Train both optimizers for each momentum; returns one result dict per momentum. With
    ``plot`` (a PNG path), draws ours' per-batch losses for every momentum (semilog)."""
    prepare_kernel()
    features, labels = make_dataset()
    results, curves = [], {}
    out("Linear regression of Dive into Deep Learning's momentum chapter (d2l.ai): batch 10, "
        f"lr {LR} (x0.1 from the third epoch), 3 epochs, trained with the built-in "
        "paddle.optimizer.Momentum and with ours on the same data")
    out(f"the true line: w = [{TRUE_W[0]:+.5f}, {TRUE_W[1]:+.5f}], b = {TRUE_B:+.5f} "
        f"(1000 examples of y = 2 x1 - 3.4 x2 + 4.2 + N(0, 0.01^2) noise)")
    out("momentum  optimizer  learned w             learned b  final loss   "
        "max |ours - built-in|")
    for momentum in momenta:
        builtin_model, builtin_losses = train(paddle.optimizer.Momentum, momentum, features,
                                              labels)
        batch_losses = []
        our_model, our_losses = train(Momentum, momentum, features, labels,
                                      on_batch=batch_losses.append)
        curves[f"momentum {momentum}"] = batch_losses
        max_diff, identical = largest_difference(builtin_model.parameters(),
                                                 our_model.parameters())
        for name, model, losses in (("built-in", builtin_model, builtin_losses),
                                    ("ours", our_model, our_losses)):
            w = model.weight.numpy().ravel()
            b = float(model.bias.numpy()[0])
            out(f"{momentum:<9} {name:<10} [{w[0]:+.5f}, {w[1]:+.5f}]  {b:+.5f}   "
                f"{losses[-1]:.6e}" + (f"  {max_diff:.1e}" if name == "ours" else ""))
        effective_step = LR / (1 - momentum) if momentum < 1 else float("inf")
        if momentum >= 1:
            out(f"          (momentum {momentum} >= 1 diverges: the velocity keeps every past "
                "gradient undiminished)")
        elif effective_step > 10:
            out(f"          (momentum {momentum} at lr {LR} overshoots by design: its effective "
                f"step lr/(1-momentum) = {effective_step:.0f} is far too large for this "
                "problem; the d2l.ai chapter shows exactly this)")
        results.append(dict(momentum=momentum, builtin_losses=builtin_losses,
                            our_losses=our_losses, max_abs_diff=max_diff,
                            bit_identical=identical,
                            weight=our_model.weight.numpy().ravel().tolist(),
                            bias=float(our_model.bias.numpy()[0])))
    if plot:
        from .plotting import save_loss_plot

        save_loss_plot(curves, plot, "Linear regression (d2l.ai momentum chapter): "
                       "lr 0.2, x0.1 from epoch 3", xlabel="batch")
        out(f"plot: {plot}")
    return results
