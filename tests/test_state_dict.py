"""Checkpoints: a state dict saved by one optimizer loads into the other and training continues
bit-identically to an uninterrupted run."""

import itertools

import paddle
import pytest
from paddle.utils import unique_name

import paddle_momentum
from harness import OPTIMIZERS, Case, assert_same, batches, build_model, snapshot, train_step

CASES = [Case(lr="step", decay="float", nesterov=True, steps=8),
         Case(dtype="float64", lr="cosine", groups="two", steps=8),
         Case(lr="tensor", param_attr="l1", clip="global", steps=8)]
SAVE_AT = 3


def _run(case, kind, start=None, tmp_path=None):
    """Train ``case`` with optimizer ``kind``; with ``start`` = (model_path, opt_path), resume
    from that checkpoint at step SAVE_AT. Returns per-step snapshots (and saves at SAVE_AT)."""
    with unique_name.guard():  # same parameter and accumulator names in every run
        model = build_model(case)
        opt = OPTIMIZERS[kind](case, model)
        if start is not None:
            model.set_state_dict(paddle.load(start[0]))
            opt.set_state_dict(paddle.load(start[1]))
        snapshots = []
        for step, (x, y) in enumerate(batches(case)):
            if start is not None and step < SAVE_AT:
                continue
            if start is None and step == SAVE_AT:
                paths = (str(tmp_path / "model.pdparams"), str(tmp_path / f"{kind}.pdopt"))
                paddle.save(model.state_dict(), paths[0])
                paddle.save(opt.state_dict(), paths[1])
            train_step(case, step, model, opt, x, y, use_minimize=case.api == "minimize")
            snapshots.append((step, snapshot(model, opt), sorted(opt.state_dict())))
    return snapshots


@pytest.mark.parametrize("saver,loader", list(itertools.product(OPTIMIZERS, OPTIMIZERS)))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resume_bit_identical(case, saver, loader, tmp_path):
    uninterrupted = _run(case, saver, tmp_path=tmp_path)
    resumed = _run(case, loader, start=(str(tmp_path / "model.pdparams"),
                                        str(tmp_path / f"{saver}.pdopt")))
    assert [s for s, *_ in resumed] == list(range(SAVE_AT, case.steps))
    for (step, (params, vels), keys), (_, (params2, vels2), keys2) in zip(
            uninterrupted[SAVE_AT:], resumed):
        assert keys == keys2, f"state_dict keys differ at step {step}"
        for i, (a, b) in enumerate(zip(params + vels, params2 + vels2)):
            assert_same(a, b, f"step {step} tensor {i}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_state_dict_keys_and_values_match_builtin(case):
    """Same keys (velocity names, LR_Scheduler) and the same values as the built-in's."""
    dicts = []
    for kind in OPTIMIZERS:
        with unique_name.guard():
            model = build_model(case)
            opt = OPTIMIZERS[kind](case, model)
            assert opt.state_dict() == ({"LR_Scheduler": opt._learning_rate.state_dict()}
                                        if case.lr in ("step", "cosine") else {})
            for step, (x, y) in enumerate(itertools.islice(batches(case), 2)):
                train_step(case, step, model, opt, x, y)
            dicts.append(opt.state_dict())
    builtin, ours = dicts
    assert sorted(builtin) == sorted(ours)
    for key in builtin:
        if key == "LR_Scheduler":
            assert builtin[key] == ours[key]
        else:
            assert_same(builtin[key].numpy(), ours[key].numpy(), key)


def test_multi_precision_state_round_trip(tmp_path):
    """fp16 parameters with master weights (which the built-in cannot train on CPU): ours saves
    and reloads master weights and velocities and continues bit-identically."""
    def train(steps, load_from=None, save_to=None):
        with unique_name.guard():
            paddle.seed(3)
            model = paddle.nn.Linear(4, 3)
            model.to(dtype="float16")  # CPU has no float16 matmul: the forward runs in float32
            opt = paddle_momentum.Momentum(0.1, parameters=model.parameters(),
                                           multi_precision=True, weight_decay=0.01)
            if load_from:
                model.set_state_dict(paddle.load(load_from[0]))
                opt.set_state_dict(paddle.load(load_from[1]))
            x = paddle.ones([2, 4], dtype="float32")
            for _ in range(steps):
                out = paddle.nn.functional.linear(x, model.weight.astype("float32"),
                                                  model.bias.astype("float32"))
                out.square().mean().backward()
                opt.step()
                opt.clear_grad()
            if save_to:
                paddle.save(model.state_dict(), save_to[0])
                paddle.save(opt.state_dict(), save_to[1])
            return [p.astype("float32").numpy() for p in model.parameters()], opt.state_dict()

    paths = (str(tmp_path / "m.pdparams"), str(tmp_path / "o.pdopt"))
    full, _ = train(6)
    train(3, save_to=paths)
    resumed, state = train(3, load_from=paths)
    assert "master_weights" in state
    for i, (a, b) in enumerate(zip(full, resumed)):
        assert_same(a, b, f"param {i}")
