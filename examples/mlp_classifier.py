"""A 3-layer MLP classifier trained with momentum 0.9 against plain SGD (batch 64, lr 0.01,
5 epochs): scikit-learn's bundled 8x8 digits by default, MNIST with --dataset mnist when it can
be downloaded.

    python examples/mlp_classifier.py --plot mlp.png [--dataset mnist] [--epochs 5]
"""

import argparse

from paddle_momentum import mlp_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--plot", default="mlp_classifier.png", help="PNG to write")
    args = parser.parse_args()
    mlp_demo.run(args.dataset, args.epochs, plot=args.plot)
