"""A training process for the crash-and-resume tests: trains STEPS steps with ours or the
built-in (--optimizer), checkpointing with paddle_momentum.checkpoint after every step and
printing "step N" once step N is saved; with --resume it continues from the checkpoint. Writes
the final parameters to --out."""

import argparse
import os
import sys
import time

import numpy as np
import paddle

from paddle_momentum import Momentum, checkpoint


def batch(step):
    rng = np.random.default_rng(1000 + step)  # the data depend on the step number only
    return (paddle.to_tensor(rng.standard_normal((16, 8)).astype("float32")),
            paddle.to_tensor(rng.standard_normal((16, 2)).astype("float32")))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--optimizer", choices=["ours", "builtin"], default="ours")
    parser.add_argument("--stop-after", type=int, help="exit normally after this step")
    parser.add_argument("--step-delay", type=float, default=0.0,
                        help="seconds to wait between each update and its checkpoint")
    args = parser.parse_args(argv)

    paddle.seed(7)
    model = paddle.nn.Sequential(paddle.nn.Linear(8, 32), paddle.nn.ReLU(),
                                 paddle.nn.Linear(32, 2))
    scheduler = paddle.optimizer.lr.StepDecay(0.05, step_size=7, gamma=0.5)
    optimizer_class = Momentum if args.optimizer == "ours" else paddle.optimizer.Momentum
    optimizer = optimizer_class(scheduler, momentum=0.9, parameters=model.parameters(),
                                use_nesterov=True, weight_decay=1e-3,
                                grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    path = os.path.join(args.dir, "last.ckpt")
    start = 0
    if args.resume and os.path.exists(path):
        start = checkpoint.load(path, model, optimizer)["step"] + 1
    for step in range(start, args.steps):
        x, y = batch(step)
        paddle.mean(paddle.square(model(x) - y)).backward()
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        time.sleep(args.step_delay)  # updated but not yet saved: where a kill hurts most
        checkpoint.save(path, model, optimizer, step=step)
        print(f"step {step}", flush=True)
        if step == args.stop_after:
            break
    if args.out:
        np.savez(args.out, *[p.numpy() for p in model.parameters()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
