"""The rest of the public surface, each checked against the built-in on the same inputs."""

import paddle
import pytest

import paddle_momentum
from harness import OPTIMIZERS, Case, assert_same, build_model, snapshot



def _both(case=Case()):
    """``{kind: (model, optimizer)}`` for identical models."""
    result = {}
    for kind, factory in OPTIMIZERS.items():
        model = build_model(case)
        result[kind] = (model, factory(case, model))
    return result


def _backward(model, scale=1.0):
    x = paddle.linspace(-1, 1, 48).reshape([8, 6])
    (model(x).square().mean() * scale).backward()


def _assert_models_equal(pairs, where=""):
    (model_a, opt_a), (model_b, opt_b) = pairs.values()
    params_a, vel_a = snapshot(model_a, opt_a)
    params_b, vel_b = snapshot(model_b, opt_b)
    for i, (a, b) in enumerate(zip(params_a + vel_a, params_b + vel_b)):
        assert_same(a, b, f"{where} tensor {i}")


def test_step_and_minimize_return_what_the_builtin_returns():
    for kind, (model, opt) in _both().items():
        _backward(model)
        assert opt.step() is None
        x = paddle.ones([2, 6])
        loss = model(x).sum()
        loss.backward()
        ops, params_grads = opt.minimize(loss)
        assert ops == []
        names = [p.name for p, _ in params_grads]
        assert names == [p.name for p in model.parameters()
                         if not p.stop_gradient and p.grad is not None], kind


def test_dygraph_minimize_takes_tensors_and_ignores_no_grad_set():
    """As the built-in: ``parameters`` must be Tensors (names raise TypeError), and in
    dygraph ``no_grad_set`` changes nothing (the gradients exist already)."""
    pairs = _both()
    for model, optimizer in pairs.values():
        first = model.parameters()[0]
        with pytest.raises(TypeError):
            optimizer.minimize(model(paddle.ones([1, 6])).sum(), parameters=[first.name])
        model.clear_gradients()
        x = paddle.linspace(-1, 1, 48).reshape([8, 6])
        loss = model(x).square().mean()
        loss.backward()
        optimizer.minimize(loss, parameters=model.parameters()[:2], no_grad_set={first})
    _assert_models_equal(pairs, "minimize")


def test_zero_gradient_still_updates_and_none_gradient_skips():
    """clear_grad() zero-fills: the next step still decays velocity and moves the parameter;
    clear_grad(set_to_zero=False) drops the gradient: the next step skips the parameter."""
    pairs = _both(Case(decay="float"))
    for set_to_zero in (True, False, True):
        for model, opt in pairs.values():
            _backward(model)
            opt.step()
            opt.clear_grad(set_to_zero=set_to_zero)
            opt.step()  # on zero or missing gradients
        _assert_models_equal(pairs, f"set_to_zero={set_to_zero}")


def test_found_inf_skips_every_update():
    pairs = _both(Case(decay="float"))
    for found_inf in (False, True, False):
        for model, opt in pairs.values():
            _backward(model)
            opt._set_auxiliary_var("found_inf", paddle.to_tensor(found_inf))
            before = [p.numpy().copy() for p in model.parameters()]
            opt.step()
            opt.clear_grad()
            changed = any((b != p.numpy()).any() for b, p in zip(before, model.parameters()))
            assert changed == (not found_inf)
        _assert_models_equal(pairs, f"found_inf={found_inf}")


def test_learning_rate_api():
    pairs = _both()
    for model, opt in pairs.values():
        assert opt.get_lr() == 0.1
        _backward(model)
        opt.step()
        opt.set_lr(0.05)
        assert opt.get_lr() == 0.05
        _backward(model)
        opt.step()
        with pytest.raises(TypeError):
            opt.set_lr("0.1")
        opt.set_lr_scheduler(paddle.optimizer.lr.StepDecay(0.2, step_size=1, gamma=0.5))
        with pytest.raises(RuntimeError):
            opt.set_lr(0.1)
        _backward(model)
        opt.step()
        opt._learning_rate.step()
        assert opt.get_lr() == 0.1
        _backward(model)
        opt.step()
    _assert_models_equal(pairs)


def test_tensor_learning_rate_is_read_every_step():
    """A Tensor lr changed in place between steps acts like the built-in given set_lr()."""
    pairs = _both(Case(lr="tensor"))
    ours_lr = pairs["ours"][1]._learning_rate_tensor
    for value in (0.1, 0.03, 0.2):
        ours_lr.set_value(paddle.to_tensor(value, dtype="float32"))
        pairs["builtin"][1].set_lr(float(paddle.to_tensor(value, dtype="float32")))
        assert pairs["ours"][1].get_lr() == pairs["builtin"][1].get_lr()
        for model, opt in pairs.values():
            _backward(model)
            opt.step()
            opt.clear_grad()
        _assert_models_equal(pairs, f"lr={value}")


def test_clear_grad_aliases():
    """clear_grad, clear_gradients and zero_grad (ours on every release; the built-in's
    zero_grad exists from Paddle 3.3)."""
    for kind, (model, opt) in _both().items():
        aliases = [(opt.clear_grad, False), (opt.clear_gradients, False)]
        if kind != "builtin" or hasattr(opt, "zero_grad"):
            aliases += [(lambda: opt.zero_grad(set_to_none=True), True),
                        (lambda: opt.zero_grad(set_to_none=False), False)]
        for clear, expect_none in aliases:
            _backward(model)
            clear()
            grad = model.first.weight.grad
            assert (grad is None) == expect_none
            if grad is not None:
                assert not grad.numpy().any()


@pytest.mark.parametrize("method", ["state_dict", "step", "set_lr", "clear_grad"])
def test_dygraph_only_methods_raise_in_static_mode(method):
    model = build_model(Case())
    opt = paddle_momentum.Momentum(0.1, parameters=model.parameters())
    args = {"set_lr": (0.1,)}.get(method, ())
    paddle.enable_static()
    try:
        with pytest.raises(AssertionError):
            getattr(opt, method)(*args)
    finally:
        paddle.disable_static()


def test_import_without_paddle_3_names_both_wheels(tmp_path):
    """With only an old Paddle importable, ``import paddle_momentum`` says what to install."""
    import subprocess
    import sys

    fake = tmp_path / "paddle"
    fake.mkdir()
    (fake / "__init__.py").write_text("__version__ = '2.6.2'\n")
    done = subprocess.run([sys.executable, "-c", "import paddle_momentum"], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": f"{tmp_path}:{paddle_momentum.__path__[0]}/.."})
    assert done.returncode != 0
    assert "ImportError" in done.stderr
    assert "paddlepaddle-gpu" in done.stderr and "pip install paddlepaddle" in done.stderr


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_gradients_are_processed_like_the_builtin(bad):
    """No silent skipping: NaN/inf flow through clip, decay and the update exactly as in the
    built-in (bitwise, NaN positions included)."""
    pairs = _both(Case(decay="float", clip="global"))
    for step in range(3):
        for model, opt in pairs.values():
            _backward(model)
            if step == 1:
                grad = model.first.weight.grad
                values = grad.numpy()
                values[0, 0] = bad
                grad.set_value(values)
            opt.step()
            opt.clear_grad()
        _assert_models_equal(pairs, f"step {step}")
