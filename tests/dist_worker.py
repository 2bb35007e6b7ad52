"""Data-parallel training run by tests/test_distributed.py in spawned processes."""

import os

import numpy as np
import paddle
import paddle.distributed as dist


def train(kind, out_dir, use_fleet=False):
    """Each rank trains on its own shard with ``paddle.DataParallel`` (or fleet) and saves its
    final parameters to ``out_dir/<kind>_rank<r>.npz``."""
    from paddle_momentum import Momentum

    dist.init_parallel_env()
    rank = dist.get_rank()
    paddle.seed(5)
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 2))
    cls = paddle.optimizer.Momentum if kind == "builtin" else Momentum
    optimizer = cls(0.1, 0.9, parameters=model.parameters(), weight_decay=0.01)
    if use_fleet:
        from paddle.distributed import fleet

        fleet.init(is_collective=True)
        optimizer = fleet.distributed_optimizer(optimizer)
        model = fleet.distributed_model(model)
    else:
        model = paddle.DataParallel(model)
    rng = np.random.default_rng(100 + rank)  # each rank its own data
    for _ in range(3):
        x = paddle.to_tensor(rng.standard_normal((4, 6)).astype("float32"))
        y = paddle.to_tensor(rng.standard_normal((4, 2)).astype("float32"))
        paddle.mean(paddle.square(model(x) - y)).backward()
        optimizer.step()
        optimizer.clear_grad()
    np.savez(os.path.join(out_dir, f"{kind}_rank{rank}.npz"),
             *[p.numpy() for p in model.parameters()])
