"""The momentum chapter of Dive into Deep Learning (d2l.ai), its experiment: linear regression with momentum 0.99, 0.9 and 0.5,
trained with paddle.optimizer.Momentum and with paddle_momentum side by side.

    python examples/linear_regression.py --plot regression.png
"""

import argparse

from paddle_momentum.tools import demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", default="linear_regression.png", help="PNG to write")
    demo.run(plot=parser.parse_args().plot)
