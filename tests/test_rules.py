"""``Momentum(rule=...)`` in this process: what a rule is given and refused, static programs,
state dicts, and a kernel that fails its check (recorded under its own digest only).

The rule here is the example's (examples/lr_inside_velocity.py): the same code, so one kernel
build serves both."""

import functools
import inspect
import shutil
import warnings

import numpy as np
import paddle
import pytest

import paddle_momentum
from harness import run_python
from paddle_momentum import _build, _kernel, _rules
from paddle_momentum.rule import attribute


def lr_inside(param, grad, velocity, lr, *, momentum):
    velocity = velocity * attribute(momentum, velocity) + lr * grad
    return param - velocity, velocity


def not_a_rule(param, grad):
    return param, grad


def needs_nu(param, grad, velocity, lr, *, nu):
    return param, velocity


def params(count=3, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    made = [paddle.create_parameter([8], dtype) for _ in range(count)]
    for param in made:
        param.set_value(rng.standard_normal(8).astype(dtype))
    return made


@pytest.mark.parametrize("arguments, names", [
    ({"use_nesterov": True}, "use_nesterov"),
    ({"weight_decay": 0.01}, "l2_coeff"),
    ({"weight_decay": paddle.regularizer.L2Decay(0.01)}, "l2_coeff"),
    ({"dampening": 0.5}, "dampening"),
    ({"rescale_grad": 2.0}, "rescale_grad"),
])
def test_a_setting_the_rule_does_not_take_is_refused(arguments, names):
    with pytest.raises(TypeError, match=names):
        paddle_momentum.Momentum(0.1, parameters=params(), rule=lr_inside, **arguments)
    groups = [{"params": params(), **{k: v for k, v in arguments.items()}}]
    with pytest.raises(TypeError, match=names):
        paddle_momentum.Momentum(0.1, parameters=groups, rule=lr_inside)


def test_a_setting_changed_later_is_refused_before_anything_is_written():
    weights = params()
    optimizer = paddle_momentum.Momentum(0.1, parameters=weights, rule=lr_inside,
                                         kernel="composed")
    for weight in weights:
        weight.grad = paddle.ones([8], "float32")
    before = [w.numpy().copy() for w in weights]
    optimizer._use_nesterov = True
    with pytest.raises(TypeError, match="use_nesterov"):
        optimizer.step()
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(weights, before))
    weights[0].regularizer = paddle.regularizer.L2Decay(0.1)  # (a parameter's own decay)
    optimizer._use_nesterov = False
    with pytest.raises(TypeError, match="l2_coeff"):
        optimizer.step()
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(weights, before))


@pytest.mark.parametrize("rule, match", [
    ("not a function", "rule must be a function"),
    (not_a_rule, "positional arguments"),
    (needs_nu, "'nu' is not an input"),
])
def test_what_cannot_be_a_rule_is_a_type_error(rule, match):
    with pytest.raises(TypeError, match=match):
        paddle_momentum.Momentum(0.1, parameters=params(), rule=rule)


def test_fused_with_a_rule_the_kernel_cannot_run_says_what():
    def tanh_step(param, grad, velocity, lr, *, momentum):
        return param - lr * paddle.tanh(velocity), velocity

    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="paddle.tanh"):
        paddle_momentum.Momentum(0.1, parameters=params(), rule=tanh_step, kernel="fused")


def _oracle(initial, grads, lr, momentum, steps):
    """lr_inside in numpy float32, each operation rounded as written."""
    param, velocity = initial.copy(), np.zeros_like(initial)
    for _ in range(steps):
        velocity = velocity * np.float32(momentum) + np.float32(lr) * grads
        param = param - velocity
    return param


@pytest.mark.parametrize("kernel", ["auto", "composed"])
def test_a_rule_in_a_static_program_runs_as_in_numpy(kernel):
    """The same function in a static program: minimize() emits our fused op (its kernel is
    built now) or the rule's composed ops; either equals the numpy replay bit for bit."""
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [4, 8], "float32")
            weight = paddle.static.create_parameter(
                [8], "float32", default_initializer=paddle.nn.initializer.Constant(0.5))
            loss = paddle.sum(x * weight)
            paddle_momentum.Momentum(0.1, 0.9, rule=lr_inside, kernel=kernel).minimize(loss)
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        feed = np.linspace(-1, 1, 32, dtype="float32").reshape(4, 8)
        for _ in range(3):
            executor.run(main, feed={"x": feed})
        scope = paddle.static.global_scope()
        got = np.array(scope.find_var(weight.name).get_tensor())
    finally:
        paddle.disable_static()
    wanted = _oracle(np.full(8, 0.5, "float32"), feed.sum(axis=0), 0.1, 0.9, 3)
    assert np.array_equal(got, wanted)


def test_state_dict_names_are_the_builtins():
    """A rule of one's own keeps the optimizer's state names: its state dict is the
    built-in's, key for key (checkpoints: tests/test_checkpoint.py)."""
    weights = params()
    ours = paddle_momentum.Momentum(0.1, parameters=weights, rule=lr_inside, kernel="composed")
    for weight in weights:
        weight.grad = paddle.ones([8], "float32")
    ours.step()
    builtin = paddle.optimizer.Momentum(0.1, parameters=weights)
    builtin.step()
    # (the names end in a counter of this process's unique-name generator)
    assert sorted(k.rsplit("_", 1)[0] for k in ours.state_dict()) == \
        sorted(k.rsplit("_", 1)[0] for k in builtin.state_dict())


def test_a_failed_check_is_recorded_under_its_own_digest(tmp_path):
    """A kernel that fails its check (right after its build) is not used, one warning says
    what disagreed with what, and the failure lands in that translation's entry only: the
    package rule's kernel stays in use. The entry is this machine's, copied as a build
    leaves it (built, not checked): nothing compiles. (In a fresh process: a library whose
    ops Paddle has registered cannot be loaded again.)"""
    rule = _rules.Rule(lr_inside)
    assert rule.kernel(wait=True) is not None
    generated = rule.translation()
    source = _kernel.kernel_source(generated, f"r{generated.digest}")
    built = _build.cache_entry(source)
    cache = tmp_path / "cache"
    for entry in built.parent.iterdir():  # (the package rule's kernel and the table too)
        if entry.is_dir() and (entry / "verdict.json").exists():
            shutil.copytree(entry, cache / entry.name)
    entry = cache / built.name
    (entry / "built.json").write_text((entry / "verdict.json").read_text())
    (entry / "verdict.json").unlink()
    (tmp_path / "rules_here.py").write_text(inspect.getsource(lr_inside).join((
        "from paddle_momentum.rule import attribute\n\n\n", "")))
    script = ("import warnings, paddle, paddle_momentum, rules_here\n"
              "from paddle_momentum import _rules, _selfcheck\n"
              "_selfcheck.kernel_problem = lambda *arguments: 'kernel 1.0, composed 2.0'\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    warnings.simplefilter('always')\n"
              "    print(_rules.Rule(rules_here.lr_inside).kernel(wait=True) is None,\n"
              "          _rules.load() is not None)\n"
              "print([str(w.message) for w in caught])\n")
    verdict, messages = run_python(script, tmp_path, cache)[0].strip().splitlines()[-2:]
    assert verdict == "True True"
    assert "disagrees with the composed ops running rules_here.lr_inside itself (kernel 1.0" \
        in messages, messages
    assert [p.parent for p in cache.glob("*/failed.json")] == [entry]


# ---------------------------------------------------------------------- found by an adversary
def nested_return(param, grad, velocity, lr, *, momentum):
    """An early return two ifs deep, then more code: only the path taken returns."""
    velocity = velocity * attribute(momentum, velocity) + grad
    if momentum > 0.5:
        if momentum > 0.95:
            return param - lr * velocity * 0.5, velocity
    return param - lr * velocity, velocity


def heavy_ball(param, grad, velocity, lr, *, momentum):
    velocity = velocity * attribute(momentum, velocity) + grad
    return param - lr * velocity, velocity


def _halving(rule):
    @functools.wraps(rule)
    def wrapped(param, grad, velocity, lr, **options):  # (a wrapper: its own code runs)
        new_param, new_velocity = rule(param, grad, velocity, lr, **options)
        return new_param, new_velocity * 0.5
    return wrapped


def rounded_or_not(param, grad, velocity, lr, *, momentum, round_result=None):
    """``round_result is None`` where nothing is rounded (float32, float64)."""
    if round_result is None:
        velocity = velocity * attribute(momentum, velocity) + grad * 0.5
    else:
        velocity = round_result(velocity * attribute(momentum, velocity) + grad)
    return param - lr * velocity, velocity


def with_defaults(param, grad, velocity, lr, *, momentum, nu=0.7):
    velocity = velocity * attribute(momentum, velocity) + grad
    return param - lr * velocity * nu, velocity


def _train(rule, kernel, momentum=0.9, steps=3, dtype="float32", between=None):
    weights = params(dtype=dtype)
    optimizer = paddle_momentum.Momentum(0.1, momentum, parameters=weights, rule=rule,
                                         kernel=kernel)
    for step in range(steps):
        if between is not None:
            between(step, kernel)
        for weight in weights:
            weight.grad = paddle.full([8], 0.25 + step, dtype)
        optimizer.step()
    return [w.numpy().tobytes() for w in weights]


@pytest.mark.parametrize("rule, momentum, dtype", [
    (nested_return, 0.99, "float32"), (_halving(heavy_ball), 0.9, "float32"),
    (rounded_or_not, 0.9, "float64")], ids=["nested-return", "wraps", "round-result-none"])
def test_fused_equals_composed(rule, momentum, dtype):
    assert paddle_momentum.register_ops(rule=rule)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no fallback)
        assert _train(rule, "auto", momentum, dtype=dtype) == \
            _train(rule, "composed", momentum, dtype=dtype)


def test_defaults_changed_in_place_are_followed():
    """``fn.__kwdefaults__['nu'] = ...`` while training: a new translation, not the kernel
    of the old default."""
    original = dict(with_defaults.__kwdefaults__)

    def change(step, kernel):
        if step == 1:
            with_defaults.__kwdefaults__["nu"] = 0.3
            if kernel == "auto":
                paddle_momentum.register_ops(rule=with_defaults)

    try:
        assert paddle_momentum.register_ops(rule=with_defaults)
        fused = _train(with_defaults, "auto", between=change)
        with_defaults.__kwdefaults__.update(original)
        composed = _train(with_defaults, "composed", between=change)
    finally:
        with_defaults.__kwdefaults__.update(original)
    assert fused == composed


F32 = np.float32(0.95)


def f32_compare(param, grad, velocity, lr, *, momentum):
    step = lr * velocity * 0.5 if momentum > F32 else lr * velocity
    return param - step, velocity * attribute(momentum, velocity) + grad


def asserting(param, grad, velocity, lr, *, momentum):
    assert momentum < 0.95, "too much momentum"
    return param - lr * grad, velocity


def three_max(param, grad, velocity, lr, *, momentum):
    return param - lr * grad * max(momentum, 0.5, 0.6), velocity


class _Computed:
    @property
    def ratio(self):
        return 0.5 + 0.0 * len(str(self))  # (a new float at every read)


COMPUTED = _Computed()


def computed_constant(param, grad, velocity, lr, *, momentum):
    return param - lr * grad * COMPUTED.ratio, velocity


@pytest.mark.parametrize("rule, construct", [
    (f32_compare, "numpy float32"), (asserting, "assert"), (three_max, "3 arguments"),
    (lambda param, grad, velocity, lr, *, momentum: (param, velocity), "lambda"),
    (computed_constant, "new object at every read")],
    ids=["float32-compare", "assert", "max-of-three", "lambda", "property"])
def test_what_the_kernel_cannot_follow_is_named_once(rule, construct):
    with pytest.warns(RuntimeWarning, match=construct) as caught:
        fused = _train(rule, "auto", momentum=0.9)
    assert sum("paddle_momentum" in str(w.message) for w in caught) == 1
    assert fused == _train(rule, "composed", momentum=0.9)


MIX = [0.7]  # (a list read as a constant: changed in place, it is another constant)


def list_mix(param, grad, velocity, lr, *, momentum):
    nu, = MIX
    velocity = velocity * attribute(momentum, velocity) + grad
    return param - lr * (velocity * attribute(nu, velocity) + grad * attribute(1.0 - nu, grad)), \
        velocity


def test_a_list_constant_changed_in_place_makes_the_translation_stale():
    """The kernel is generated from the list's elements: an element replaced in place is a
    new rule (a new translation and kernel), as rebinding the name is."""
    rule = _rules.Rule(list_mix)
    translated = rule.translation()
    assert translated is not None and translated.identity.fresh()
    try:
        MIX[0] = 0.1
        assert not translated.identity.fresh()
        assert "list" in translated.identity.what_changed()
        assert rule.translation() is not translated
    finally:
        MIX[0] = 0.7
