"""Where ours deliberately differs from the built-in (docs/differences.md).

The built-in cannot be the reference here (it raises, ignores an argument or mutates input), so
the reference is the numpy oracle fed with each step's gradients, or the built-in in the mode
where it does work.
"""

import contextlib
import itertools
import os
import warnings

import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

import paddle_momentum
from harness import assert_same
from oracle import OracleParam
from paddle_momentum import Momentum

SHAPES = [(7, 5), (5,), (), (0, 3)]
# float16/bfloat16 parameters without master weights, on purpose: ours warns as the built-in
# does (tests/test_errors.py checks that warning); expected here, so not in the summary
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Accumulating with FP16/BF16:UserWarning:paddle_momentum\._state$")


def _as_float32(tensor):
    return tensor.astype("float32").numpy() if tensor.dtype != paddle.float64 else tensor.numpy()


def _make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [
        paddle.to_tensor(rng.standard_normal(shape).astype("float32"), stop_gradient=False)
        .astype(dtype)
        .detach()
        for shape in SHAPES
    ]


def _leaf(tensor):
    tensor.stop_gradient = False
    return tensor


ORACLE_CASES = [
    # (dtype, multi_precision, nesterov, l2, rescale)
    *itertools.product(["float32", "float64"], [False], [False, True], [0.0, 0.01], [0.3]),
    *itertools.product(["float16", "bfloat16"], [False, True], [False, True], [0.0, 0.01], [1.0]),
    ("float16", True, True, 0.01, 0.3),
    ("bfloat16", True, False, 0.0, 0.3),
]


@pytest.mark.parametrize(
    "dtype,multi_precision,nesterov,l2,rescale",
    ORACLE_CASES,
    ids=[f"{d}-mp{int(m)}-nag{int(n)}-l2={c}-rescale={r}" for d, m, n, c, r in ORACLE_CASES],
)
@pytest.mark.parametrize("kernel", ["composed", "fused"])
def test_against_oracle(dtype, multi_precision, nesterov, l2, rescale, kernel, place):
    """rescale_grad is applied when opted in on CPU; float16/bfloat16 train on CPU, with or
    without master weights."""
    params = [_leaf(p) for p in _make_params(dtype)]
    oracles = [OracleParam(_as_float32(p), dtype, multi_precision) for p in params]
    lr = 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the low-precision accumulation warning
        opt = Momentum(learning_rate=lr, momentum=0.9, parameters=params, use_nesterov=nesterov,
                       weight_decay=l2 or None, multi_precision=multi_precision,
                       rescale_grad=rescale, kernel=kernel, rescale_grad_on_cpu=True)
    rng = np.random.default_rng(1)
    for step in range(10):
        for p in params:
            target = paddle.to_tensor(rng.standard_normal(p.shape).astype("float32"))
            (p.astype("float32") * target).sum().backward()
        grads = [_as_float32(p.grad) for p in params]
        opt.step()
        opt.clear_grad()
        for i, (p, oracle, g) in enumerate(zip(params, oracles, grads)):
            expected = oracle.step(g, lr, momentum=0.9, nesterov=nesterov, l2=l2, rescale=rescale)
            assert_same(expected.astype(np.float32) if dtype != "float64" else expected,
                        _as_float32(p), f"step {step} param {i}")
            if p.size == 0:  # (Paddle 3.0 gives an empty parameter no gradient, no velocity)
                continue
            velocity = opt._get_accumulator_master("velocity", p)
            assert velocity.dtype == (paddle.float32 if multi_precision or dtype == "float32"
                                      else p.dtype)
            assert_same(oracle.velocity.astype(np.float32) if dtype != "float64"
                        else oracle.velocity, _as_float32(velocity), f"step {step} velocity {i}")


def _train_with_rescale(make, mode, dtype, **options):
    """Three steps of a small model with rescale_grad=0.3 (as an argument, and in a group),
    dygraph or static; the parameters' bytes."""
    paddle.seed(0)
    data = np.random.RandomState(0).standard_normal((4, 8)).astype(dtype)
    if mode == "dygraph":
        model = paddle.nn.Linear(8, 4)
        model.to(dtype=dtype)  # (static: the default dtype, set below)
        groups = [{"params": [model.weight], "rescale_grad": 0.7}, {"params": [model.bias]}]
        optimizer = make(0.1, 0.9, parameters=groups, rescale_grad=0.3, weight_decay=0.01,
                         **options)
        for _ in range(3):
            model(paddle.to_tensor(data)).square().mean().backward()
            optimizer.step()
            optimizer.clear_grad()
        return [p.numpy().tobytes() for p in model.parameters()]
    paddle.enable_static()
    default_dtype = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.utils.unique_name.guard(), paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [4, 8], dtype)
            layer = paddle.nn.Linear(8, 4)
            loss = layer(x).square().mean()
            make(0.1, 0.9, rescale_grad=0.3, weight_decay=0.01, **options).minimize(loss)
        executor = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            executor.run(startup)
            for _ in range(3):
                executor.run(main, feed={"x": data})
            # (the parameters fetched by a fourth run: the same procedure for both optimizers)
            return [value.tobytes() for value in executor.run(
                main, feed={"x": data}, fetch_list=layer.parameters())]
    finally:
        paddle.set_default_dtype(default_dtype)
        paddle.disable_static()


@pytest.mark.parametrize("mode", ["dygraph", "static"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel", ["auto", "composed"])
def test_rescale_grad_ignored_on_cpu_as_the_builtin(kernel, dtype, mode):
    """The built-in's dense CPU kernel ignores rescale_grad (its documentation says it
    multiplies the gradient): by default ours does too, bit for bit; rescale_grad_on_cpu=True
    applies it (the oracle test above)."""
    builtin = _train_with_rescale(paddle.optimizer.Momentum, mode, dtype)
    assert _train_with_rescale(Momentum, mode, dtype, kernel=kernel) == builtin
    assert _train_with_rescale(Momentum, mode, dtype, kernel=kernel,
                               rescale_grad_on_cpu=True) != builtin


def test_master_weights_named_like_paddle_and_in_state_dict():
    param = paddle.create_parameter([3, 2], dtype="float16")
    param.name = "probe.w_0"
    (param.astype("float32") * 2).sum().backward()
    opt = Momentum(0.1, parameters=[param], multi_precision=True)
    opt.step()
    state = opt.state_dict()
    master = state["master_weights"]["probe.w_0"]
    assert master.dtype == paddle.float32 and master.name.startswith("probe.w_0_fp32_master_")
    assert f"{master.name}_velocity_0" in state
    assert np.array_equal(master.astype("float16").numpy(), param.numpy())


def _grouped_model(seed=3):
    paddle.seed(seed)
    linear = paddle.nn.Linear(3, 2, weight_attr=paddle.ParamAttr(
        regularizer=paddle.regularizer.L1Decay(0.05), learning_rate=0.5))
    other = paddle.nn.Linear(2, 2)
    groups = [{"params": [linear.weight], "weight_decay": 0.02, "learning_rate": 0.3},
              {"params": [linear.bias], "momentum": 0.5},
              {"params": other.parameters(), "weight_decay": paddle.regularizer.L1Decay(0.01)}]
    return (linear, other), groups


def _side_effects(groups, params):
    """What a caller can see after construction: its dicts, the parameters' attributes."""
    dicts = [{k: (type(v).__name__ if k == "weight_decay" and v is not None else v)
              for k, v in g.items() if k != "params"} for g in groups]
    attributes = [(type(p.regularizer).__name__, p.optimize_attr["learning_rate"])
                  for p in params]
    return dicts, attributes


def test_group_dicts_and_parameters_written_as_the_builtin():
    seen = []
    for cls in (paddle.optimizer.Momentum, Momentum):
        (linear, other), groups = _grouped_model()
        cls(0.1, parameters=groups, weight_decay=0.01)
        seen.append(_side_effects(groups, [linear.weight, linear.bias, *other.parameters()]))
    assert seen[0] == seen[1]
    assert seen[0][0][0]["weight_decay"] is None  # (the built-in's: a fused decay is taken out)


def test_second_optimizer_from_the_same_group_dicts_equals_builtin():
    """PaddleClas builds a second optimizer from the group dicts the first one modified (its
    use_multi_tensor branch) and trains with it: with the built-in, its decay group then
    trains without weight decay. Ours, bit for bit."""
    results = []
    for cls in (paddle.optimizer.Momentum, Momentum):
        (linear, other), groups = _grouped_model()
        cls(0.1, parameters=groups, weight_decay=0.01, momentum=0.9)
        second = cls(0.1, parameters=groups, weight_decay=0.01, momentum=0.9)
        x = paddle.ones([4, 3])
        for _ in range(3):
            other(linear(x)).square().mean().backward()
            second.step()
            second.clear_grad()
        results.append([p.numpy() for p in [*linear.parameters(), *other.parameters()]])
    for i, (expected, actual) in enumerate(zip(*results)):
        assert_same(expected, actual, f"param {i}")


def _two_layer_model():
    paddle.seed(5)
    return paddle.nn.Linear(4, 3), paddle.nn.Linear(4, 3)


def test_multi_tensor_parameter_set_may_change_between_steps():
    """The built-in's use_multi_tensor freezes the parameter set at the first step and fails
    afterwards; ours continues, equal to the built-in's per-parameter mode."""
    runs = []
    for factory, multi in ((paddle.optimizer.Momentum, False), (Momentum, True)):
        a, b = _two_layer_model()
        opt = factory(0.1, parameters=a.parameters() + b.parameters(), use_multi_tensor=multi,
                      weight_decay=0.01)
        x = paddle.ones([2, 4])
        for step in range(4):
            loss = a(x).sum() if step % 2 else (a(x) + b(x)).sum()
            loss.backward()
            opt.step()
            opt.clear_grad(set_to_zero=False)
        runs.append([p.numpy() for p in a.parameters() + b.parameters()])
    for i, (expected, actual) in enumerate(zip(*runs)):
        assert_same(expected, actual, f"param {i}")


def test_builtin_multi_tensor_does_fail_there():
    """Guards the premise of the test above: if Paddle fixes this, the note must change."""
    a, b = _two_layer_model()
    opt = paddle.optimizer.Momentum(0.1, parameters=a.parameters() + b.parameters(),
                                    use_multi_tensor=True)
    x = paddle.ones([2, 4])
    (a(x) + b(x)).sum().backward()
    opt.step()
    opt.clear_grad(set_to_zero=False)
    a(x).sum().backward()
    with pytest.raises(ValueError):
        opt.step()


TORCH_OPTIONS = [
    dict(dampening=0.1), dict(maximize=True), dict(decoupled_weight_decay=0.05),
    dict(dampening=0.5, maximize=True, decoupled_weight_decay=0.01),
]


@pytest.mark.parametrize("options", TORCH_OPTIONS, ids=lambda o: "-".join(o))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nesterov,momentum", [(False, 0.9), (True, 0.9), (False, 0.0)])
def test_torch_sgd_options_against_oracle(options, dtype, nesterov, momentum):
    """dampening, maximize and decoupled weight decay (SGDW) against the numpy oracle of
    torch.optim.SGD's algorithm (without momentum torch keeps no buffer: nothing damped)."""
    if nesterov and options.get("dampening"):
        pytest.skip("torch (and ours) refuse Nesterov with dampening")
    params = [_leaf(p) for p in _make_params(dtype)]
    oracles = [OracleParam(_as_float32(p), dtype, False) for p in params]
    opt = Momentum(learning_rate=0.1, momentum=momentum, parameters=params,
                   use_nesterov=nesterov, weight_decay=0.01, **options)
    oracle_options = dict(dampening=options.get("dampening", 0.0),
                          maximize=options.get("maximize", False),
                          decoupled=options.get("decoupled_weight_decay", 0.0))
    rng = np.random.default_rng(2)
    for step in range(6):
        for p in params:
            (p * paddle.to_tensor(rng.standard_normal(p.shape).astype(dtype))).sum().backward()
        grads = [p.grad.numpy() for p in params]
        opt.step()
        opt.clear_grad()
        for i, (p, oracle, g) in enumerate(zip(params, oracles, grads)):
            expected = oracle.step(g, 0.1, momentum=momentum, nesterov=nesterov, l2=0.01,
                                   **oracle_options)
            assert_same(expected, p.numpy(), f"step {step} param {i}")


GROUP_TORCH_OPTIONS = [dict(dampening=0.5), dict(maximize=True),
                       dict(decoupled_weight_decay=0.05), {},
                       dict(dampening=0.25, maximize=True, decoupled_weight_decay=0.01)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_options_per_group_on_every_implementation(dtype):
    """The torch.optim.SGD options are settings like momentum: each group its own. The
    default (fused buckets, one call per group) and kernel='composed' give the same bits,
    and each group follows the oracle with its own options."""
    runs = []
    paddle_momentum.register_ops()  # (on a first use the kernel builds in the background)
    for kernel in ("auto", "composed"):
        groups = [[_leaf(p) for p in _make_params(dtype, seed=index)]
                  for index in range(len(GROUP_TORCH_OPTIONS))]
        opt = Momentum(learning_rate=0.1, momentum=0.9, kernel=kernel, parameters=[
            dict(params=params, **options) for params, options in zip(groups, GROUP_TORCH_OPTIONS)])
        oracles = [[OracleParam(_as_float32(p), dtype, False) for p in params]
                   for params in groups]
        rng = np.random.default_rng(5)
        for step in range(4):
            for params in groups:
                for p in params:
                    (p * paddle.to_tensor(rng.standard_normal(p.shape).astype(dtype))) \
                        .sum().backward()
            grads = [[p.grad.numpy() for p in params] for params in groups]
            opt.step()
            opt.clear_grad()
            for params, options, group_oracles, group_grads in zip(
                    groups, GROUP_TORCH_OPTIONS, oracles, grads):
                for i, (p, oracle, g) in enumerate(zip(params, group_oracles, group_grads)):
                    expected = oracle.step(g, 0.1, momentum=0.9,
                                           dampening=options.get("dampening", 0.0),
                                           maximize=options.get("maximize", False),
                                           decoupled=options.get("decoupled_weight_decay", 0.0))
                    assert_same(expected, p.numpy(), f"{kernel} step {step} {options} {i}")
        if kernel == "auto":
            assert any(opt._flat.buckets_of_group.values()), "no fused bucket was used"
        runs.append([p.numpy() for params in groups for p in params])
    for i, (fused, composed) in enumerate(zip(*runs)):
        assert_same(composed, fused, f"parameter {i}")


def test_loaded_velocity_after_a_skipped_step_is_not_first():
    """A velocity created in a step that found_inf skipped, then loaded from a state dict,
    is an existing buffer: the next step damps (torch would have loaded its buffer)."""
    results = []
    for skip_first in (False, True):
        params = [_leaf(p) for p in _make_params("float32")]
        source = Momentum(0.1, 0.9, parameters=params, dampening=0.5)
        for _ in range(2):
            sum((p * 2).sum() for p in params).backward()
            source.step()
            source.clear_grad()
        state = source.state_dict()
        with unique_name.guard():
            resumed = Momentum(0.1, 0.9, parameters=params, dampening=0.5)
            if skip_first:
                sum((p * 2).sum() for p in params).backward()
                resumed._set_auxiliary_var("found_inf", True)
                resumed.step()
                resumed._set_auxiliary_var("found_inf", False)
                resumed.clear_grad()
            resumed.set_state_dict(state)
            sum((p * 3).sum() for p in params).backward()
            resumed.step()
            results.append([resumed._accumulators["velocity"][p.name].numpy() for p in params
                            if p.size])  # (Paddle 3.0: no gradient, no velocity when empty)
    for i, (a, b) in enumerate(zip(*results)):
        assert_same(a, b, f"velocity {i}")


def _dampened_run(steps, reload_at=None):
    """Parameters after ``steps`` steps with dampening (torch semantics); with ``reload_at``,
    the optimizer is replaced at that step by a new one loading its state dict."""
    params = [_leaf(p) for p in _make_params("float32")]

    def new_optimizer():
        return Momentum(learning_rate=0.1, momentum=0.9, parameters=params, dampening=0.5)

    opt = new_optimizer()
    rng = np.random.default_rng(5)
    with contextlib.ExitStack() as resumed:
        for step in range(steps):
            if step == reload_at:
                state = opt.state_dict()
                opt = new_optimizer()
                opt.set_state_dict(state)
                # as in a new process: the velocities' names are drawn again from 0
                resumed.enter_context(unique_name.guard())
            for p in params:
                grad = rng.standard_normal(p.shape).astype("float32")
                (p * paddle.to_tensor(grad)).sum().backward()
            opt.step()
            opt.clear_grad()
    return [p.numpy() for p in params]


@pytest.mark.parametrize("reload_at", [0, 1, 3])
def test_torch_dampening_resumes_from_a_state_dict(reload_at):
    """torch starts its buffer undamped at a parameter's first step only: a velocity loaded
    from a state dict (after 1 or 3 steps) is an existing buffer, damped from then on; an
    empty state dict (step 0) leaves the first step first."""
    uninterrupted = _dampened_run(5)
    for i, (a, b) in enumerate(zip(uninterrupted, _dampened_run(5, reload_at))):
        assert_same(a, b, f"parameter {i}")


def test_torch_options_against_torch_itself():
    """The same run in torch.optim.SGD (where torch is installed; float32). Tolerance: torch
    computes ``buf * mu + (1 - d) * g`` and the step with its own kernels (add with alpha,
    possibly multiply-add), so the last bits may differ; 1e-6 relative bounds that."""
    if os.environ.get("PADDLE_MOMENTUM_REQUIRE_TORCH") == "1":  # (nox -s torch, in CI)
        import torch
    else:
        torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    initial = [rng.standard_normal(shape).astype("float32") for shape in SHAPES]
    grads = [[rng.standard_normal(shape).astype("float32") for shape in SHAPES]
             for _ in range(6)]
    for options in ({"dampening": 0.5}, {"dampening": 0.5, "nesterov": True},
                    {"maximize": True, "dampening": 0.3}):
        options = dict(options)
        nesterov = options.pop("nesterov", False)
        if nesterov:
            options["dampening"] = 0.0  # torch: Nesterov requires zero dampening
        ours = [_leaf(paddle.to_tensor(a)) for a in initial]
        theirs = [torch.tensor(a, requires_grad=True) for a in initial]
        opt = Momentum(0.1, 0.9, parameters=ours, use_nesterov=nesterov, weight_decay=0.01,
                       **options)
        torch_opt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, nesterov=nesterov,
                                    weight_decay=0.01, **options)
        for step_grads in grads:
            for p, t, g in zip(ours, theirs, step_grads):
                (p * paddle.to_tensor(g)).sum().backward()
                t.grad = torch.tensor(g)
            opt.step()
            opt.clear_grad()
            torch_opt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_torch_options_validated():
    param = _leaf(_make_params("float32")[0])
    for bad, error in ((dict(dampening=1.5), ValueError), (dict(maximize="yes"), TypeError),
                       (dict(decoupled_weight_decay=-1.0), ValueError),
                       (dict(dampening=0.5, use_nesterov=True), ValueError)):
        with pytest.raises(error, match=next(iter(bad))):
            Momentum(0.1, parameters=[param], **bad)


def test_maximize_ascends():
    """maximize=True climbs the objective the default descends."""
    values = []
    for maximize in (False, True):
        param = _leaf(paddle.to_tensor([1.0, -2.0]))
        opt = Momentum(0.1, parameters=[param], maximize=maximize)
        for _ in range(3):
            (param * param).sum().backward()
            opt.step()
            opt.clear_grad()
        values.append(float((param * param).sum()))
    assert values[0] < 5.0 < values[1]
