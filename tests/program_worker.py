"""A static training program with our update ops, saved in one process and run in another
(``test_static.test_saved_training_program_runs_in_a_new_process``).

``python program_worker.py MODE KIND LAYERS DIR STAGE``: STAGE ``save`` builds the program
(``KIND``: our fused or composed kernel), trains two steps and saves the program and its state
(``paddle.static.save``; under the legacy IR also the program's serialized desc; ``KIND``
``builtin``: the built-in's, for reference); ``resume``
loads both in this fresh process, after ``import paddle_momentum`` (which registers our ops),
and trains two more steps; ``whole`` trains four steps in one go. Prints the parameters as
JSON (name -> list of float32 bits).
"""

import json
import pathlib
import sys

import numpy as np
import paddle

import paddle_momentum

mode, kind, layers, directory, stage = sys.argv[1:6]
paddle.enable_static()
ir = paddle.pir_utils.OldIrGuard() if mode == "legacy" else paddle.pir_utils.IrGuard()
path = str(pathlib.Path(directory) / "train")
rng = np.random.default_rng(0)
feeds = [{"x": rng.standard_normal((5, 3)).astype("float32")} for _ in range(4)]

with ir:
    executor = paddle.static.Executor(paddle.CPUPlace())
    if stage == "resume":
        main = paddle.static.Program()
        if mode == "pir":
            paddle.base.core.deserialize_pir_program(path + ".json", main, 1)
            # Paddle's PIR load writes into initialized scope variables only, and no startup
            # program ran in this process: the saved state goes into the scope directly
            for name, value in paddle.static.load_program_state(path).items():
                paddle.static.global_scope().var(name).get_tensor().set(value,
                                                                       paddle.CPUPlace())
        else:
            main = paddle.static.deserialize_program(
                pathlib.Path(path + ".program").read_bytes())
            paddle.static.load(main, path, executor)
        names = json.loads(pathlib.Path(path + ".names").read_text())
        runs = feeds[2:]
    else:
        main, startup = paddle.static.Program(), paddle.static.Program()
        main.random_seed = startup.random_seed = 3
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [None, 3], "float32")
            hidden = x
            for _ in range(int(layers)):
                hidden = paddle.nn.Linear(3, 3)(hidden)
            loss = paddle.mean(paddle.square(hidden))
            optimizer = (paddle.optimizer.Momentum(0.05, 0.9, weight_decay=1e-3)
                         if kind == "builtin" else
                         paddle_momentum.Momentum(0.05, 0.9, weight_decay=1e-3, kernel=kind))
            _, params_grads = optimizer.minimize(loss)
        names = [p.name for p, _ in params_grads]
        executor.run(startup)
        runs = feeds[:2] if stage == "save" else feeds
    for feed in runs:
        executor.run(main, feed=feed)
    if stage == "save":
        paddle.static.save(main, path)
        if mode == "legacy":
            pathlib.Path(path + ".program").write_bytes(main.desc.serialize_to_string())
        pathlib.Path(path + ".names").write_text(json.dumps(names))
    scope = paddle.static.global_scope()
    print(json.dumps({name: np.array(scope.find_var(name).get_tensor()).view("uint32")
                      .ravel().tolist() for name in names}))
