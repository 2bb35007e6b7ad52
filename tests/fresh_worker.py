"""One optimizer in a fresh process, as users run it: a seed-0 model that keeps drawing from
Paddle's random generator after the optimizer exists (dropout, ``paddle.randn`` batches, a
layer created after the first step). Prints one JSON line: the final parameters and the
state of Paddle's (and Python's) global world afterwards, for ``test_fresh_process.py`` to
compare between the built-in and ours.

    python fresh_worker.py {builtin,ours} SCENARIO [KERNEL]
"""

import hashlib
import json
import random
import sys
import warnings

import numpy as np
import paddle

SCENARIOS = ("plain", "groups_clip_l1", "nesterov_l2")


class Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.first = paddle.nn.Linear(8, 32)
        self.dropout = paddle.nn.Dropout(0.5)
        self.second = paddle.nn.Linear(32, 1)

    def forward(self, x):
        return self.second(self.dropout(paddle.nn.functional.relu(self.first(x))))


def optimizer_for(kind, scenario, kernel, net):
    if kind == "builtin":
        momentum = paddle.optimizer.Momentum
        options = {}
    else:
        import paddle_momentum

        momentum = paddle_momentum.Momentum
        options = {"kernel": kernel}
    if scenario == "groups_clip_l1":
        parameters = [{"params": net.first.parameters(), "momentum": 0.8},
                      {"params": net.second.parameters(),
                       "weight_decay": paddle.regularizer.L1Decay(1e-3)}]
        return momentum(0.05, 0.9, parameters=parameters,
                        grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0), **options)
    if scenario == "nesterov_l2":
        return momentum(0.05, 0.9, parameters=net.parameters(), use_nesterov=True,
                        weight_decay=paddle.regularizer.L2Decay(1e-3), **options)
    return momentum(0.05, 0.9, parameters=net.parameters(), **options)


def global_state():
    """What training must leave as the built-in leaves it."""
    main = paddle.static.default_main_program()
    startup = paddle.static.default_startup_program()
    return {
        "paddle_rng_draw": paddle.rand([4]).numpy().tolist(),
        "numpy_rng_draw": np.random.random(),
        "python_rng_draw": random.random(),
        "unique_names": dict(paddle.base.unique_name.generator.ids),
        "dygraph": paddle.in_dynamic_mode(),
        "device": paddle.get_device(),
        "default_programs": [str(main), str(startup)],
        "stdout_is_original": sys.stdout is sys.__stdout__,
        "warnings_filters": [repr(f) for f in warnings.filters],
    }


def main(kind, scenario, kernel="auto"):
    paddle.seed(0)
    np.random.seed(0)
    random.seed(0)
    net = Net()
    optimizer = optimizer_for(kind, scenario, kernel, net)
    late = None
    for step in range(5):
        x = paddle.randn([16, 8])
        target = x.sum(axis=1, keepdim=True)
        loss = paddle.nn.functional.mse_loss(net(x), target)
        if late is not None:
            loss = loss + late(x).mean()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        if step == 0:
            late = paddle.nn.Linear(8, 2)  # created after the first step: draws its init
    params = [p.numpy() for p in net.parameters()] + [p.numpy() for p in late.parameters()]
    print(json.dumps({
        "params": [hashlib.sha256(p.tobytes()).hexdigest() for p in params],
        "param_sums": [float(p.sum()) for p in params],
        "late_layer": late.weight.name,
        "state": global_state(),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
