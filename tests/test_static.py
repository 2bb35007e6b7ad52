"""Static programs beyond the matrix: names, return values, checkpoints, inference export,
master weights, and the example."""

import contextlib
import importlib.util
import pathlib

import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

import paddle_momentum
from harness import assert_same

MODES = ["pir", "legacy"]
OPTIMIZERS = {"builtin": paddle.optimizer.Momentum, "ours": paddle_momentum.Momentum}
ROOT = pathlib.Path(__file__).resolve().parent.parent
PADDLE_MOMENTUM_OPS = {"pd_op.momentum", "pd_op.momentum_", "pd_op.merged_momentum_",
                       "momentum", "merged_momentum"}  # Paddle's own kernels: never ours


@contextlib.contextmanager
def static_program(mode):
    """Static mode under ``mode``'s IR, fresh names and scope; yields (main, startup)."""
    paddle.enable_static()
    ir = paddle.pir_utils.OldIrGuard() if mode == "legacy" else paddle.pir_utils.IrGuard()
    try:
        with ir, unique_name.guard(), paddle.static.scope_guard(paddle.static.Scope()):
            main, startup = paddle.static.Program(), paddle.static.Program()
            main.random_seed = startup.random_seed = 3
            with paddle.static.program_guard(main, startup):
                yield main, startup
    finally:
        paddle.disable_static()


def _regression(kind, **kwargs):
    """x -> Linear(3, 4) -> relu -> Linear(4, 1), squared error, minimized by ``kind``."""
    x = paddle.static.data("x", [None, 3], "float32")
    y = paddle.static.data("y", [None, 1], "float32")
    out = paddle.nn.Linear(4, 1)(paddle.nn.functional.relu(paddle.nn.Linear(3, 4)(x)))
    loss = paddle.mean(paddle.square(out - y))
    optimizer = OPTIMIZERS[kind](**dict(dict(learning_rate=0.05, momentum=0.9), **kwargs))
    result = optimizer.minimize(loss)
    return x, out, loss, optimizer, result


def _feeds(steps, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((5, 3)).astype("float32"),
             "y": rng.standard_normal((5, 1)).astype("float32")} for _ in range(steps)]


def _op_name(op):
    return op.name() if callable(getattr(op, "name", None)) else op.type


@pytest.mark.parametrize("mode", MODES)
def test_minimize_returns_and_names_match_builtin(mode):
    seen = {}
    for kind in OPTIMIZERS:
        with static_program(mode) as (main, startup):
            _, _, _, optimizer, (ops, params_grads) = _regression(kind, use_nesterov=True)
            assert isinstance(ops, list) and ops
            params = [p for p, _ in params_grads]
            seen[kind] = (
                [p.name for p in params],
                [optimizer._get_accumulator_master("velocity", p).name for p in params],
                type(ops[0]).__name__, type(params_grads[0][1]).__name__,
            )
            if kind == "ours":
                names = [_op_name(op) for op in ops]
                assert not set(names) & PADDLE_MOMENTUM_OPS, names
    assert seen["builtin"] == seen["ours"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("saver,loader", [("builtin", "ours"), ("ours", "builtin"),
                                          ("ours", "ours")])
def test_static_save_load_resumes_bit_identically(mode, saver, loader, tmp_path):
    feeds = _feeds(6)
    path = str(tmp_path / "checkpoint")

    def run(kind, feeds, save_after=None, load=False):
        with static_program(mode) as (main, startup):
            _, _, loss, _, _ = _regression(kind, weight_decay=0.01)
            executor = paddle.static.Executor(paddle.CPUPlace())
            executor.run(startup)
            if load:
                paddle.static.load(main, path, executor)
            losses = []
            for i, feed in enumerate(feeds):
                losses.append(executor.run(main, feed=feed, fetch_list=[loss])[0])
                if save_after == i:
                    paddle.static.save(main, path)
            return losses

    uninterrupted = run(saver, feeds, save_after=2)
    resumed = run(loader, feeds[3:], load=True)
    for step, (a, b) in enumerate(zip(uninterrupted[3:], resumed)):
        assert_same(a, b, f"loss at step {step + 3}")


@pytest.mark.parametrize("mode", MODES)
def test_save_inference_model_is_unaffected(mode, tmp_path):
    outputs = {}
    for kind in OPTIMIZERS:
        with static_program(mode) as (main, startup):
            x, out, loss, _, _ = _regression(kind)
            executor = paddle.static.Executor(paddle.CPUPlace())
            executor.run(startup)
            for feed in _feeds(3):
                executor.run(main, feed=feed, fetch_list=[loss])
            prefix = str(tmp_path / kind / "model")
            paddle.static.save_inference_model(prefix, [x], [out], executor, program=main)
            program, feed_names, fetch_targets = paddle.static.load_inference_model(prefix,
                                                                                    executor)
            names = [_op_name(op) for op in program.global_block().ops]
            assert not any("momentum" in n or n.startswith("pd_op.assign_out") or n == "assign"
                           for n in names), names
            probe = _feeds(1, seed=9)[0]["x"]
            outputs[kind] = executor.run(program, feed={feed_names[0]: probe},
                                         fetch_list=fetch_targets)[0]
    assert_same(outputs["builtin"], outputs["ours"], "inference output")


def _fp16_weight_loss(x, weight):
    """CPU Paddle has no float16 matmul: the forward runs on the float32 cast."""
    out = paddle.nn.functional.linear(x, paddle.cast(weight, "float32"))
    return paddle.mean(paddle.square(out))


@pytest.mark.parametrize("mode", MODES)
def test_multi_precision_static_equals_dygraph(mode):
    """float16 parameters with float32 master weights (the built-in has no CPU kernel)."""
    rng = np.random.default_rng(4)
    initial = rng.standard_normal((3, 2)).astype("float16")
    feeds = [rng.standard_normal((4, 3)).astype("float32") for _ in range(5)]

    weight = paddle.create_parameter([3, 2], "float16")
    weight.set_value(initial)
    opt = paddle_momentum.Momentum(0.1, parameters=[weight], multi_precision=True,
                                   weight_decay=0.01)
    dygraph = []
    for feed in feeds:
        _fp16_weight_loss(paddle.to_tensor(feed), weight).backward()
        opt.step()
        opt.clear_grad()
        dygraph.append(weight.astype("float32").numpy())

    with static_program(mode) as (main, startup):
        x = paddle.static.data("x", [4, 3], "float32")
        w = paddle.static.create_parameter([3, 2], "float16", name="w16")
        loss = _fp16_weight_loss(x, w)
        paddle_momentum.Momentum(0.1, multi_precision=True, weight_decay=0.01).minimize(loss)
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        scope = paddle.static.global_scope()
        scope.var("w16").get_tensor().set(initial, paddle.CPUPlace())
        # the master weight was cast from the startup value: make it the cast of `initial`
        for name in ("w16_fp32_master_0",):
            scope.var(name).get_tensor().set(initial.astype("float32"), paddle.CPUPlace())
        for step, feed in enumerate(feeds):
            executor.run(main, feed={"x": feed}, fetch_list=[loss])
            value = np.array(scope.find_var("w16").get_tensor()).astype("float32")
            assert_same(dygraph[step], value, f"step {step}")


def test_parameter_groups_in_static_raise_type_error():
    with static_program("pir"):
        x = paddle.static.data("x", [2, 3], "float32")
        layer = paddle.nn.Linear(3, 1)
        optimizer = paddle_momentum.Momentum(0.1, parameters=[{"params": layer.parameters()}])
        with pytest.raises(TypeError, match="dygraph"):
            optimizer.minimize(layer(x).sum())


@pytest.mark.parametrize("legacy_ir", [False, True])
def test_static_graph_example_matches_builtin(legacy_ir):
    spec = importlib.util.spec_from_file_location("static_graph_example",
                                                  ROOT / "examples" / "static_graph.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    ours = example.train(paddle_momentum.Momentum, steps=30, legacy_ir=legacy_ir)
    builtin = example.train(paddle.optimizer.Momentum, steps=30, legacy_ir=legacy_ir)
    assert ours == builtin
    assert ours[-1] < 0.05 * ours[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers", [2, 4])
def test_small_and_large_batches_match_builtin(mode, layers):
    """A batch of fewer than STATIC_BATCH_MIN parameters gets one op per parameter, a larger
    one a single multi-tensor op; both equal the built-in, bitwise, over several steps."""
    runs = {}
    for kind in OPTIMIZERS:
        with static_program(mode) as (main, startup):
            x = paddle.static.data("x", [None, 3], "float32")
            hidden = x
            for i in range(layers):
                hidden = paddle.nn.Linear(3, 3)(hidden)
                hidden = paddle.nn.functional.relu(hidden) if i < layers - 1 else hidden
            loss = paddle.mean(paddle.square(hidden))
            _, params_grads = OPTIMIZERS[kind](0.05, 0.9, weight_decay=1e-3).minimize(loss)
            params = [p for p, _ in params_grads]
            names = [_op_name(op) for op in main.global_block().ops]
            if kind == "ours":
                multi = sum("pm_momentum_multi" in name for name in names)
                single = sum(name.endswith(("pm_momentum", "pm_momentum_")) for name in names)
                large = len(params) >= paddle_momentum.optimizer.STATIC_BATCH_MIN
                assert (multi, single) == ((1, 0) if large else (0, len(params))), names
            executor = paddle.static.Executor(paddle.CPUPlace())
            executor.run(startup)
            for feed in _feeds(4):
                executor.run(main, feed={"x": feed["x"]})
            runs[kind] = [np.array(paddle.static.global_scope().find_var(p.name).get_tensor())
                          for p in params]
    for i, (a, b) in enumerate(zip(runs["builtin"], runs["ours"])):
        assert_same(a, b, f"param {i}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("maximize", [False, True])
def test_torch_dampening_in_static_programs_starts_like_torch(mode, maximize):
    """torch.optim.SGD's dampening in a static program: the first run puts the gradient
    into the velocity undamped (a persistable flag per parameter says which run is first),
    the later ones damp it; against the numpy oracle of torch's algorithm, on the gradients
    the program computed."""
    from oracle import OracleParam

    with static_program(mode) as (main, startup):
        _, _, _, _, (_, params_grads) = _regression("ours", dampening=0.5,
                                                    maximize=maximize)
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        scope = paddle.static.global_scope()
        params, grads = [p for p, _ in params_grads], [g for _, g in params_grads]
        oracles = [OracleParam(np.array(scope.find_var(p.name).get_tensor()), "float32", False)
                   for p in params]
        for step, feed in enumerate(_feeds(4)):
            values = executor.run(main, feed=feed, fetch_list=grads + params)
            for i, oracle in enumerate(oracles):
                expected = oracle.step(values[i], 0.05, momentum=0.9, maximize=maximize,
                                       dampening=0.5)
                assert_same(expected, values[len(grads) + i], f"step {step} parameter {i}")


VARIANTS = {"fused": {}, "composed": {"kernel": "composed"}, "torch": {"dampening": 0.5},
            "fed_lr": {"learning_rate": "fed"},
            # (the built-in's global-norm clip fails under the legacy IR: ours runs its own)
            "global_norm": {"grad_clip": paddle.nn.ClipGradByGlobalNorm(1.0)}}
OPTIMIZE_ROLES = {2, 257}  # OpRole.Optimize, OpRole.Optimize | OpRole.LRSched


def _linear_stack(layers):
    """``layers`` Linear(3, 3) layers on the fed ``x``: (their output, its mean square)."""
    hidden = paddle.static.data("x", [None, 3], "float32")
    for _ in range(layers):
        hidden = paddle.nn.Linear(3, 3)(hidden)
    return hidden, paddle.mean(paddle.square(hidden))


def _train_eval_program(mode, kind, layers, options=None):
    """A train program of ``layers`` Linear layers minimized by ``kind`` (``options`` for
    ours) and its eval program: ``main.clone(for_test=True)`` after minimize under the legacy
    IR, ``main.clone()`` before it under PIR (which has no for_test). Returns the roles of the
    ops minimize appended (legacy; not backward ones), the eval program's op names, and its
    output on a probe after three training steps."""
    with static_program(mode) as (main, startup):
        hidden, loss = _linear_stack(layers)
        eval_program, eval_out = None, hidden
        if mode == "pir":
            mapping = paddle.pir.IrMapping()
            eval_program = main.clone(mapping)
            eval_out = mapping.look_up(hidden)
        appended_from = len(main.global_block().ops)
        cls = OPTIMIZERS[kind] if kind == "builtin" else paddle_momentum.Momentum
        # (the built-in's ClipGradByValue has no PIR implementation)
        arguments = dict(learning_rate=0.05, momentum=0.9,
                         weight_decay=paddle.regularizer.L1Decay(1e-3),
                         grad_clip=paddle.nn.ClipGradByValue(1.0) if mode == "legacy" else None)
        arguments.update(options or {})
        fed_lr = arguments["learning_rate"] == "fed"
        if fed_lr:
            arguments["learning_rate"] = paddle.static.data("lr", [1], "float32")
        cls(**arguments).minimize(loss)
        roles = set()
        if mode == "legacy":
            roles = {op.attr("op_role") for op in main.global_block().ops[appended_from:]
                     if not op.type.endswith("_grad")}
            eval_program = main.clone(for_test=True)
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        for feed in _feeds(3):
            executor.run(main, feed=dict({"x": feed["x"]},
                                         **({"lr": np.array([0.05], "float32")} if fed_lr
                                            else {})))
        output = executor.run(eval_program, feed={"x": _feeds(1, seed=4)[0]["x"]},
                              fetch_list=[eval_out])[0]
        return roles, [_op_name(op) for op in eval_program.global_block().ops], output


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("layers", [2, 8])
def test_train_eval_programs_drop_every_update_op(mode, variant, layers):
    """Every op ours appends (clip, global-norm clip, regularizer, a fed learning rate's
    reshape, update: one per parameter or one batched op, composed ops, the torch flag)
    carries the optimizer role, as the built-in's do, so
    the eval program ``clone(for_test=True)`` makes is the built-in's, and computes the
    same output after training. (Under PIR no optimizer op carries a role, the built-in's
    neither; its eval program is cloned before minimize.)"""
    roles, eval_ops, output = _train_eval_program(mode, "ours", layers, VARIANTS[variant])
    builtin_roles, builtin_eval_ops, builtin_output = _train_eval_program(mode, "builtin",
                                                                          layers)
    assert roles <= OPTIMIZE_ROLES and builtin_roles <= OPTIMIZE_ROLES
    assert eval_ops == builtin_eval_ops
    if variant in ("fused", "composed", "fed_lr"):
        assert_same(builtin_output, output, "eval output")


PROGRAM_WORKER = pathlib.Path(__file__).resolve().parent / "program_worker.py"


def _program_stage(tmp_path, mode, kind, layers, stage):
    """The parameters (name -> float32 bits) after ``program_worker.py``'s ``stage``, run in
    a fresh process."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(PROGRAM_WORKER), mode, kind, str(layers),
                           str(tmp_path), stage], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode,kind,layers", [
    ("legacy", "fused", 2), ("legacy", "fused", 8), ("legacy", "composed", 2),
    ("pir", "fused", 2), ("pir", "fused", 8)])
def test_saved_training_program_runs_in_a_new_process(tmp_path, mode, kind, layers):
    """A training program with our update ops (one per parameter, or one batched op),
    saved with ``paddle.static.save`` and its serialized program, runs in a new process
    after ``import paddle_momentum`` (which registers our ops when the kernel cache holds
    them): two steps there, then two here, equal four in one process, bit for bit."""
    _program_stage(tmp_path, mode, kind, layers, "save")
    resumed = _program_stage(tmp_path, mode, kind, layers, "resume")
    assert resumed == _program_stage(tmp_path, mode, kind, layers, "whole")


LR_STEPS = [0.05, 0.05, 0.025, 0.025, 0.0125]  # PiecewiseDecay([2, 4], [0.05, 0.025, 0.0125])


def _lr_run(mode, kind, lr_kind, kernel="auto", layers=2, shape=(1,), dtype="float32"):
    """The parameters after five steps of ``layers`` Linear layers with the learning rate
    given as ``lr_kind``: "fed" (``paddle.static.data`` of ``shape`` and ``dtype`` fed
    LR_STEPS), "scheduler" (a PiecewiseDecay stepping through the same values), "computed"
    (0.1 * 0.5 in the program) or "float" (0.05)."""
    with static_program(mode) as (main, startup):
        hidden, loss = _linear_stack(layers)
        lr = {"fed": lambda: paddle.static.data("lr", list(shape), dtype),
              "computed": lambda: paddle.to_tensor(0.1, dtype=dtype) * 0.5,
              "float": lambda: 0.05,
              "scheduler": lambda: paddle.optimizer.lr.PiecewiseDecay(
                  [2, 4], [0.05, 0.025, 0.0125])}[lr_kind]()
        optimizer = (paddle.optimizer.Momentum(lr, 0.9, weight_decay=1e-3) if kind == "builtin"
                     else paddle_momentum.Momentum(lr, 0.9, weight_decay=1e-3, kernel=kernel))
        _, params_grads = optimizer.minimize(loss)
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        for step, feed in enumerate(_feeds(5)):
            feed = {"x": feed["x"]}
            if lr_kind == "fed":
                feed["lr"] = np.full(shape, LR_STEPS[step], dtype)
            executor.run(main, feed=feed)
            if lr_kind == "scheduler":
                lr.step()
        return [np.array(paddle.static.global_scope().find_var(p.name).get_tensor())
                for p, _ in params_grads]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", ["fused", "composed"])
@pytest.mark.parametrize("layers", [2, 8])
def test_learning_rate_from_the_graph(mode, kernel, layers):
    """A learning rate that lives in the program (a fed ``static.data``, 0-d or [1], float32
    or float64; or computed there) equals the same values given as a scheduler or a float to
    the built-in, bit for bit, one op per parameter or batched."""
    scheduled = _lr_run(mode, "builtin", "scheduler", layers=layers)
    for shape, dtype in (((1,), "float32"), ((), "float32"), ((1,), "float64")):
        fed = _lr_run(mode, "ours", "fed", kernel, layers, shape, dtype)
        for i, (a, b) in enumerate(zip(scheduled, fed)):
            assert_same(a, b, f"fed {dtype} {list(shape)}: parameter {i}")
    constant = _lr_run(mode, "builtin", "float", layers=layers)
    computed = _lr_run(mode, "ours", "computed", kernel, layers)
    for i, (a, b) in enumerate(zip(constant, computed)):
        assert_same(a, b, f"computed: parameter {i}")


@pytest.mark.parametrize("mode", MODES)
def test_learning_rate_graph_value_must_be_one_float(mode):
    with static_program(mode):
        for shape, dtype in (([2], "float32"), ([1], "int32"), ([None], "float32")):
            lr = paddle.static.data(f"lr_{shape}_{dtype}".replace(" ", ""), shape, dtype)
            with pytest.raises(TypeError, match="learning_rate"):
                paddle_momentum.Momentum(lr, 0.9)
        optimizer = paddle_momentum.Momentum(paddle.static.data("lr", [1], "float32"), 0.9)
        with pytest.raises(TypeError, match="Executor.run"):
            optimizer.get_lr()


def _mixed_dtype_run(mode, kernel, layers=8):
    """A float32 and a float64 tower of ``layers`` weights each (more than STATIC_BATCH_MIN:
    one batched op per dtype with the fused kernel), five steps; the weights after."""
    with static_program(mode) as (main, startup):
        loss, weights = 0, []
        for dtype in ("float32", "float64"):
            hidden = paddle.static.data(f"x_{dtype}", [None, 3], dtype)
            default_dtype = paddle.get_default_dtype()
            paddle.set_default_dtype(dtype)  # (Linear takes the default dtype)
            try:
                for _ in range(layers):
                    linear = paddle.nn.Linear(3, 3)
                    weights.append(linear.weight)
                    hidden = paddle.nn.functional.relu(linear(hidden))
            finally:
                paddle.set_default_dtype(default_dtype)
            loss = loss + paddle.mean(paddle.square(hidden)).astype("float32")
        paddle_momentum.Momentum(0.05, 0.9, weight_decay=1e-3, kernel=kernel).minimize(loss)
        batched = sum("pm_momentum_multi" in _op_name(op) for op in main.global_block().ops)
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        for feed in _feeds(5):
            executor.run(main, feed={"x_float32": feed["x"],
                                     "x_float64": feed["x"].astype("float64")})
        return batched, [np.array(paddle.static.global_scope().find_var(w.name).get_tensor())
                         for w in weights]


@pytest.mark.parametrize("mode", MODES)
def test_mixed_dtype_static_program_batches_per_dtype(mode):
    """float32 and float64 parameters in one static program (the built-in cannot: its
    learning rate has the first parameter's dtype). The fused kernel batches them per dtype
    (it used to put both into one op and fail with a bare std::exception) and equals the
    composed ops (Paddle's own ops, equal to the built-in wherever it runs) bit for bit."""
    batched, fused = _mixed_dtype_run(mode, "fused")
    assert batched == 2  # weights and biases of one dtype share their settings
    _, composed = _mixed_dtype_run(mode, "composed")
    for i, (a, b) in enumerate(zip(composed, fused)):
        assert_same(a, b, f"weight {i}")


@pytest.mark.parametrize("mode", MODES)
def test_learning_rate_of_another_program_is_refused(mode):
    """A learning-rate value belongs to one program: minimizing another with it (a second
    program, or a value made elsewhere) is a TypeError, not a crash at run or exit."""
    with static_program(mode) as (main, _):
        _regression("ours", learning_rate=paddle.static.data("lr", [1], "float32"))
        other, other_startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(other, other_startup):
            optimizer = paddle_momentum.Momentum(paddle.static.data("lr2", [1], "float32"))
        x = paddle.static.data("x2", [None, 3], "float32")
        loss = paddle.mean(paddle.nn.Linear(3, 1)(x))
        with pytest.raises(TypeError, match="another program"):
            optimizer.minimize(loss)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("count", [1, 8])
def test_zero_dim_parameters_in_static_programs(mode, count):
    """0-d parameters (alone: per-parameter ops; eight: a batched op) equal the built-in;
    under PIR a single 0-d one takes the composed ops (Paddle's custom-op dtype inference
    aborted the process on it)."""
    runs = {}
    for kind in OPTIMIZERS:
        with static_program(mode) as (main, startup):
            x = paddle.static.data("x", [None, 3], "float32")
            scales = [paddle.static.create_parameter(
                [], "float32", default_initializer=paddle.nn.initializer.Constant(0.5 + i))
                for i in range(count)]
            loss = paddle.mean(paddle.square(paddle.add_n([x * s for s in scales])))
            _, params_grads = OPTIMIZERS[kind](0.05, 0.9, weight_decay=1e-3).minimize(loss)
            executor = paddle.static.Executor(paddle.CPUPlace())
            executor.run(startup)
            for feed in _feeds(3):
                executor.run(main, feed={"x": feed["x"]})
            runs[kind] = [np.array(paddle.static.global_scope().find_var(p.name).get_tensor())
                          for p, _ in params_grads]
    for i, (a, b) in enumerate(zip(runs["builtin"], runs["ours"])):
        assert_same(a, b, f"parameter {i}")
