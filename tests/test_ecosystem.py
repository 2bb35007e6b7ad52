"""What a Paddle user plugs an optimizer into: each run with ours is bitwise equal to the same
run with the built-in."""

import numpy as np
import paddle
import pytest

from harness import assert_same
from paddle_momentum import Momentum

OPTIMIZERS = [paddle.optimizer.Momentum, Momentum]


def _mlp():
    paddle.seed(3)
    return paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 2))


def _data(steps=4, seed=0):
    rng = np.random.default_rng(seed)
    return [(paddle.to_tensor(rng.standard_normal((4, 6)).astype("float32")),
             paddle.to_tensor(rng.standard_normal((4, 2)).astype("float32")))
            for _ in range(steps)]


def _assert_equal_models(models):
    for i, (a, b) in enumerate(zip(models[0].parameters(), models[1].parameters())):
        assert_same(a.astype("float32").numpy(), b.astype("float32").numpy(), f"param {i}")


def _train_both(train):
    """``train(optimizer_class)`` returns a model; the two models must be bit-identical, and
    trained (different from the initial model)."""
    models = [train(cls) for cls in OPTIMIZERS]
    _assert_equal_models(models)
    initial = _mlp()
    assert any(not np.array_equal(a.astype("float32").numpy(), b.numpy())
               for a, b in zip(models[1].parameters(), initial.parameters()))


def test_amp_o1_bfloat16_with_grad_scaler():
    def train(cls):
        model = _mlp()
        opt = cls(0.1, parameters=model.parameters(), weight_decay=0.01)
        scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
        for x, y in _data():
            with paddle.amp.auto_cast(level="O1", dtype="bfloat16"):
                loss = paddle.mean(paddle.square(model(x) - y))
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.clear_grad()
        return model
    _train_both(train)


def test_amp_o2_decorate_with_master_weights():
    def train(cls):
        model = _mlp()
        opt = cls(0.1, parameters=model.parameters(), multi_precision=True)
        model, opt = paddle.amp.decorate(models=model, optimizers=opt, level="O2",
                                         dtype="bfloat16")
        for x, y in _data():
            with paddle.amp.auto_cast(level="O2", dtype="bfloat16"):
                loss = paddle.mean(paddle.square(model(x) - y))
            loss.backward()
            opt.step()
            opt.clear_grad()
        return model
    _train_both(train)


def test_hapi_model_fit():
    class Pairs(paddle.io.Dataset):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.x = rng.standard_normal((32, 6)).astype("float32")
            self.y = rng.standard_normal((32, 2)).astype("float32")

        def __getitem__(self, i):
            return self.x[i], self.y[i]

        def __len__(self):
            return len(self.x)

    def train(cls):
        network = _mlp()
        model = paddle.Model(network)
        model.prepare(optimizer=cls(0.05, parameters=network.parameters(), use_nesterov=True),
                      loss=paddle.nn.MSELoss())
        model.fit(Pairs(), batch_size=8, epochs=2, shuffle=False, verbose=0)
        return network
    _train_both(train)


@pytest.mark.parametrize("pattern", ["whole_step", "forward_only"])
def test_jit_to_static_training(pattern):
    """``whole_step``: the train step (forward, backward, step) under to_static in SOT mode;
    ``forward_only``: a to_static model, backward and step in dygraph. (full_graph=True with
    ``loss.backward()`` inside fails for the built-in too in Paddle 3.3.1.)"""
    def train(cls):
        model = _mlp()
        opt = cls(0.1, parameters=model.parameters(), weight_decay=0.01)
        if pattern == "forward_only":
            static_model = paddle.jit.to_static(model, full_graph=True)
            for x, y in _data():
                paddle.mean(paddle.square(static_model(x) - y)).backward()
                opt.step()
                opt.clear_grad()
            return model

        def train_step(x, y):
            loss = paddle.mean(paddle.square(model(x) - y))
            loss.backward()
            opt.step()
            opt.clear_grad()
            return loss

        step = paddle.jit.to_static(train_step, full_graph=False)
        for x, y in _data():
            step(x, y)
        return model
    _train_both(train)


def test_incubate_lookahead_wraps_ours():
    def train(cls):
        model = _mlp()
        opt = paddle.incubate.LookAhead(cls(0.1, parameters=model.parameters()), alpha=0.5, k=2)
        for x, y in _data(5):
            paddle.mean(paddle.square(model(x) - y)).backward()
            opt.step()
            opt.clear_grad()
        return model
    _train_both(train)


def test_incubate_model_average_beside_ours():
    def train(cls):
        model = _mlp()
        opt = cls(0.1, parameters=model.parameters())
        average = paddle.incubate.ModelAverage(0.15, parameters=model.parameters(),
                                               min_average_window=2, max_average_window=4)
        for x, y in _data(5):
            paddle.mean(paddle.square(model(x) - y)).backward()
            opt.step()
            average.step()
            opt.clear_grad()
        with average.apply(need_restore=False):
            pass
        return model
    _train_both(train)


def _embedding_run(cls, sparse, ids_batches, **options):
    paddle.seed(1)
    embedding = paddle.nn.Embedding(10, 3, sparse=sparse)
    head = paddle.nn.Linear(3, 2)
    opt = cls(0.1, 0.9, parameters=embedding.parameters() + head.parameters(), **options)
    for ids in ids_batches:
        head(embedding(paddle.to_tensor(ids))).square().sum().backward()
        opt.step()
        opt.clear_grad()
    return [embedding.weight.numpy(), head.weight.numpy()]


@pytest.mark.parametrize("kernel", ["composed", "fused"])
def test_sparse_embedding_gradients(kernel):
    """Ours on SelectedRows gradients equals the built-in on the same model with dense
    gradients, for any ids. (The built-in's own sparse path loses rows when a batch's ids are
    not in ascending order: it looks them up by binary search in the unsorted merged rows.)"""
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 10, (2, 3)) for _ in range(4)]
    options = dict(weight_decay=0.01, use_nesterov=True)
    dense = _embedding_run(paddle.optimizer.Momentum, False, batches, **options)
    ours = _embedding_run(Momentum, True, batches, kernel=kernel, **options)
    for i, (a, b) in enumerate(zip(dense, ours)):
        assert_same(a, b, f"tensor {i}")


def test_sparse_rescale_grad_matches_builtin_sparse_on_sorted_ids():
    """With ascending unique ids the built-in's sparse kernel is right, and it applies
    rescale_grad there (unlike its dense CPU kernel): ours equals it."""
    batches = [[[0, 2, 5]], [[1, 3, 4]], [[2, 6, 9]]]

    def run(cls):
        paddle.seed(1)
        embedding = paddle.nn.Embedding(10, 3, sparse=True)
        opt = cls(0.1, 0.9, parameters=embedding.parameters(), rescale_grad=0.3,
                  weight_decay=0.01)
        for ids in batches:
            (embedding(paddle.to_tensor(ids)) * 1.5).sum().backward()
            opt.step()
            opt.clear_grad()
        return embedding.weight.numpy()
    assert_same(run(paddle.optimizer.Momentum), run(Momentum), "embedding")


@pytest.mark.parametrize("ir", ["legacy", "pir"])
@pytest.mark.parametrize("kernel", ["auto", "composed"])
def test_sparse_embedding_in_a_static_program_matches_builtin(kernel, ir):
    """Embedding(sparse=True) in a static program (the legacy IR hands the update a
    SelectedRows variable), rescale_grad applied as the built-in's sparse kernel applies it;
    repeated ids in a batch."""
    def run(make):
        guard = paddle.pir_utils.OldIrGuard() if ir == "legacy" else paddle.pir_utils.IrGuard()
        paddle.enable_static()
        try:
            with guard, paddle.utils.unique_name.guard():
                paddle.seed(1)
                main, startup = paddle.static.Program(), paddle.static.Program()
                with paddle.static.program_guard(main, startup):
                    ids = paddle.static.data("ids", [5], "int64")
                    embedding = paddle.nn.Embedding(10, 3, sparse=True)
                    loss = (embedding(ids) * 1.5).square().mean()
                    make().minimize(loss)
                executor = paddle.static.Executor(paddle.CPUPlace())
                scope = paddle.static.Scope()
                with paddle.static.scope_guard(scope):
                    executor.run(startup)
                    for step in range(3):
                        executor.run(main, feed={"ids": np.array([1, 2, 3, 4, 1 + step],
                                                                 "int64")})
                    return np.array(scope.find_var(embedding.weight.name).get_tensor())
        finally:
            paddle.disable_static()

    builtin = run(lambda: paddle.optimizer.Momentum(0.1, 0.9, rescale_grad=0.5))
    assert_same(builtin, run(lambda: Momentum(0.1, 0.9, rescale_grad=0.5, kernel=kernel)),
                "embedding")


def test_sparse_gradient_with_use_multi_tensor_equals_builtin_without():
    """The built-in's use_multi_tensor=True raises ValueError on a SelectedRows gradient; ours
    runs, with the numbers of the built-in without it (the option changes no number)."""
    def run(cls, **options):
        paddle.seed(1)
        embedding = paddle.nn.Embedding(10, 3, sparse=True)
        optimizer = cls(0.1, 0.9, parameters=embedding.parameters(), **options)
        for ids in ([0, 2, 5], [1, 3, 4]):
            (embedding(paddle.to_tensor(ids)) * 1.5).sum().backward()
            optimizer.step()
            optimizer.clear_grad()
        return embedding.weight.numpy()
    with pytest.raises(ValueError):
        run(paddle.optimizer.Momentum, use_multi_tensor=True)
    assert_same(run(paddle.optimizer.Momentum), run(Momentum, use_multi_tensor=True),
                "embedding")
