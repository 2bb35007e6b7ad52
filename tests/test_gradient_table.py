"""The gradient table (csrc/gradient_table.cc) against Paddle's own accessors: the addresses it
writes are get_all_grads' gradients' data_ptr(), it counts the members without a usable
gradient as get_all_grads does, and it refuses (a negative code naming the member) whatever the
kernel must not be given."""

import json
import shutil

import numpy as np
import paddle
import pytest

from paddle_momentum import _build, _kernel, _selfcheck
from paddle_momentum._settings import attribute_objects


@pytest.fixture(scope="module")
def fill():
    """The table's fill function (built, or loaded from the cache, when a test first needs
    it: not at collection)."""
    table_fill = _kernel.gradient_table()
    if table_fill is None:
        pytest.skip("the gradient table did not build")
    return table_fill


SHAPES = ([4], [3, 5], [7], [2, 2, 2], [])


def _params(dtype="float32"):
    params = [paddle.create_parameter(shape or [1], dtype) for shape in SHAPES]
    params[-1] = paddle.to_tensor(np.float32(2.0).astype(dtype), stop_gradient=False)  # 0-d
    paddle.add_n([(p * (i + 1)).sum() for i, p in enumerate(params)]).backward()
    return params


def _released(params):
    params[1].clear_gradient(False)


def _frozen(params):
    params[2].stop_gradient = True


def _never_used(params):
    params.append(paddle.create_parameter([6], params[0].dtype))


def _zeroed(params):
    params[0].clear_gradient(True)


CHANGES = {"all": lambda params: None, "released": _released, "frozen": _frozen,
           "never_used": _never_used, "zeroed": _zeroed}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_table_equals_get_all_grads(change, dtype, fill):
    params = _params(dtype)
    CHANGES[change](params)
    table = _kernel.new_gradient_table(params, fill)
    updated = fill(params, table, None)
    grads = paddle.base.core.eager.get_all_grads(params)
    assert updated == sum(g is not None for g in grads)
    rows = table.numpy()
    assert rows[2].tolist() == [0 if g is None else g.data_ptr() for g in grads]
    assert rows[1].tolist() == [int(p.size) for p in params]


def _moved(params):
    paddle.to_tensor(params[3].numpy())._share_buffer_to(params[3])
    return 3, 3


def _wrong_size_gradient(params):  # (Paddle refuses a gradient of another dtype itself)
    params[1]._copy_gradient_from(paddle.ones([16]))
    return 1, 4


def _not_a_tensor(params):
    params[2] = np.ones(7, np.float32)
    return 2, 1


def _dtype_changed(params):  # float32 storage overwritten with float64 data in place
    paddle.assign(paddle.ones(params[0].shape, "float64"), output=params[0])
    return 0, 2


def _lr_scale_changed(params):
    # (not a plain float or int: Python checks it; a plain one is taken, see below)
    params[1].optimize_attr["learning_rate"] = np.float64(0.5)
    return 1, 6


def _regularizer_set(params):
    params[3].regularizer = paddle.regularizer.L2Decay(0.1)
    return 3, 6


def _main_grad_set(params):
    params[2].main_grad = paddle.ones(params[2].shape)
    return 2, 6



REFUSED = {"moved": _moved, "wrong_size_gradient": _wrong_size_gradient,
           "not_a_tensor": _not_a_tensor, "dtype_changed": _dtype_changed,
           "lr_scale_changed": _lr_scale_changed, "regularizer_set": _regularizer_set,
           "main_grad_set": _main_grad_set}


@pytest.mark.parametrize("problem", list(REFUSED))
def test_table_refuses(problem, fill):
    params = _params()
    table = _kernel.new_gradient_table(params, fill)
    snapshot = [obj for p in params for obj in attribute_objects(p)]
    assert fill(params, table, snapshot) == len(params)
    member, code = REFUSED[problem](params)
    assert fill(params, table, snapshot) == -(8 * member + code), _kernel.TABLE_PROBLEMS[code]


def test_table_refuses_a_table_or_snapshot_of_another_size(fill):
    params = _params()
    assert fill(params, _kernel.new_gradient_table(params[:-1], fill), None) == -5
    snapshot = [obj for p in params[:-1] for obj in attribute_objects(p)]
    assert fill(params, _kernel.new_gradient_table(params, fill), snapshot) == -5


def test_a_failed_self_check_falls_back_with_one_warning_and_is_remembered(
        monkeypatch, tmp_path, fill):
    """A table that fails its check (once, right after its build) is not used: one warning,
    and the verdict is remembered, so the next process does not build it again. The entry
    is this machine's, copied as a build leaves it (built, not checked): nothing compiles."""
    built = _build.cache_entry(_kernel.GRADIENT_TABLE_SOURCE)
    entry = tmp_path / built.name
    shutil.copytree(built, entry)
    verdict = json.loads((entry / "verdict.json").read_text())
    (entry / "built.json").write_text(json.dumps(verdict))  # (same fields: library, sha256)
    (entry / "verdict.json").unlink()
    compiled_at = (entry / "build.log").stat().st_mtime_ns
    monkeypatch.setenv("PADDLE_MOMENTUM_CACHE", str(tmp_path))
    monkeypatch.setattr(_selfcheck, "gradient_table_problem", lambda *arguments: "layout")
    _kernel.gradient_table.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="gradient table disagrees.*layout"):
            assert _kernel.gradient_table() is None
        _kernel.gradient_table.cache_clear()
        with pytest.warns(RuntimeWarning, match="failed to build or check before.*layout"):
            assert _kernel.gradient_table() is None
        assert len(list(tmp_path.glob("*/build.log"))) == 1
        assert (entry / "build.log").stat().st_mtime_ns == compiled_at  # nothing compiled
        monkeypatch.setenv("PADDLE_MOMENTUM_GRADIENT_TABLE", "0")
        _kernel.gradient_table.cache_clear()
        assert _kernel.gradient_table() is None  # off: no build, no warning
    finally:
        monkeypatch.undo()
        _kernel.gradient_table.cache_clear()
    assert _kernel.gradient_table() is not None


def test_table_takes_a_new_plain_lr_scale(fill):
    """A learning-rate scale replaced by another plain number (a per-step schedule) is no
    change: the fill writes its double into the member's row, which the kernel reads, and
    the snapshot takes the new object."""
    params = _params()
    table = _kernel.new_gradient_table(params, fill)
    snapshot = [obj for p in params for obj in attribute_objects(p)]
    assert fill(params, table, snapshot) == len(params)
    params[1].optimize_attr["learning_rate"] = 0.25
    params[2].optimize_attr = {"learning_rate": 3}
    assert fill(params, table, snapshot) == len(params)
    from paddle_momentum import _layout
    scales = table.numpy()[_layout.TABLE_ROWS["LR_SCALE"]].view(np.float64).tolist()
    assert scales == [1.0, 0.25, 3.0] + [1.0] * (len(params) - 3)
    assert snapshot[4] is params[1].optimize_attr["learning_rate"]


def _state_tensors(params):
    """Velocities (fresh zero tensors) for ``params``, as a table's states argument (one
    triple: dict, keys, objects), with their addresses in the table's velocity row."""
    velocities = [paddle.zeros(p.shape, p.dtype) for p in params]
    return {p.name: v for p, v in zip(params, velocities)}, velocities


@pytest.mark.parametrize("how", ["replaced_in_dict", "storage_replaced"])
def test_table_sees_a_state_replaced_or_moved(how, fill):
    """A velocity replaced in the optimizer's dict, or whose storage was replaced in place
    (``_share_buffer_to``, as a user resetting momentum may do), is reported as moved: the
    bucket then follows it (the built-in reads the dict's tensor, and its storage)."""
    from paddle_momentum import _layout
    params = _params()
    table = _kernel.new_gradient_table(params, fill)
    velocity_dict, velocities = _state_tensors(params)
    rows = table.numpy()
    rows[_layout.TABLE_ROWS["VELOCITY_ADDRESS"]] = [v.data_ptr() for v in velocities]
    table = paddle.to_tensor(rows)
    states = [velocity_dict, [p.name for p in params], velocities]
    assert fill(params, table, None, states) == len(params)
    if how == "replaced_in_dict":
        velocity_dict[params[2].name] = paddle.zeros(params[2].shape, params[2].dtype)
    else:
        paddle.ones(params[2].shape, params[2].dtype)._share_buffer_to(velocities[2])
    assert fill(params, table, None, states) == -(8 * 2 + 3)
