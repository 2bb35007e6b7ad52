"""NaN bit patterns: ours against the built-in, raw bits (sign and payload) compared.

Where two NaNs meet in an operation (a velocity and a gradient of opposite signs, a NaN
parameter, a NaN clip factor and a NaN gradient) which one survives depends on the operand
order of the machine instruction; the built-in keeps the same one at every element position
(docs/research/nan_bits.md). Gradients carry NaNs of both signs, the sign flipped from one step
to the next, so from the second step NaN velocities and parameters meet NaN gradients of the
other sign; parameters of sizes around the kernels' vector widths (8 floats, 4 doubles) put
NaNs in vectorised bodies and scalar tails.
"""

import numpy as np
import paddle
import pytest

import paddle_momentum

LENGTHS = [1, 2, 3, 7, 8, 9, 17, 33, 1000]
STEPS = 3
UINT = {"float32": np.uint32, "float64": np.uint64}


def _gradients(dtype, lengths, seed):
    """Per step, per parameter: finite values with NaNs of both signs (a quarter each), each
    NaN's sign flipped at every step."""
    rng = np.random.default_rng(seed)
    kinds = [rng.choice(3, size=n, p=[0.5, 0.25, 0.25]) for n in lengths]
    steps = []
    for step in range(STEPS):
        grads = []
        for n, kind in zip(lengths, kinds):
            g = rng.standard_normal(n).astype(dtype)
            positive = (kind == 1) if step % 2 == 0 else (kind == 2)
            g[kind != 0] = -np.nan  # numpy's -nan: the sign bit set
            g[positive] = np.nan
            assert np.signbit(g[positive]).sum() == 0
            grads.append(g)
        steps.append(grads)
    return steps


def _clip(kind):
    if kind == "global":
        return paddle.nn.ClipGradByGlobalNorm(1.0)
    if kind == "norm":
        return paddle.nn.ClipGradByNorm(1.0)
    return None


def _run(kind, dtype, lengths, mode, clip, seed):
    """Train ``len(lengths)`` parameters STEPS steps; the raw bits of parameters, velocities and
    gradients (after the step: the global-norm clip scales them in place) after every step."""
    paddle.seed(seed)
    rng = np.random.default_rng(seed + 1)
    params = []
    for n in lengths:
        p = paddle.create_parameter([n], dtype)
        p.set_value(rng.standard_normal(n).astype(dtype))
        params.append(p)
    options = dict(learning_rate=0.1, momentum=0.9, parameters=params,
                   use_nesterov=mode == "nesterov",
                   weight_decay=0.01 if mode == "l2" else None, grad_clip=_clip(clip))
    if kind == "builtin":
        optimizer = paddle.optimizer.Momentum(**options)
    else:
        optimizer = paddle_momentum.Momentum(kernel=kind, **options)
    runs = []
    for grads in _gradients(dtype, lengths, seed + 2):
        for p, g in zip(params, grads):
            (p * paddle.to_tensor(g)).sum().backward()  # p.grad == g, NaN bits included
        optimizer.step()
        snapshot = []
        for p in params:
            snapshot.append(("param", p.numpy().view(UINT[dtype]).copy()))
            velocity = optimizer._get_accumulator_master("velocity", p)
            snapshot.append(("velocity", velocity.numpy().view(UINT[dtype]).copy()))
            snapshot.append(("grad", p.grad.numpy().view(UINT[dtype]).copy()))
        optimizer.clear_grad()
        runs.append(snapshot)
    return runs


def _assert_same_bits(expected, actual, lengths):
    for step, (ref, ours) in enumerate(zip(expected, actual)):
        for index, ((name, a), (_, b)) in enumerate(zip(ref, ours)):
            if not np.array_equal(a, b):
                at = int(np.argmax(a != b))
                raise AssertionError(
                    f"step {step} {name} of parameter {index // 3} (size "
                    f"{lengths[index // 3]}), element {at}: built-in {a[at]:#x}, ours {b[at]:#x}"
                    f" ({int((a != b).sum())} elements differ)")


CASES = [(dtype, mode, clip)
         for dtype in ("float32", "float64")
         for mode in ("plain", "nesterov", "l2")
         for clip in ("none", "global", "norm")
         if not (clip == "norm" and dtype == "float64")]  # Paddle's clip_by_norm: float32 only


@pytest.mark.parametrize("kernel", ["auto", "composed"])
@pytest.mark.parametrize("lengths", [[n] for n in LENGTHS] + [LENGTHS],
                         ids=[str(n) for n in LENGTHS] + ["all"])
@pytest.mark.parametrize("dtype,mode,clip", CASES, ids=["-".join(c) for c in CASES])
def test_nan_bits_match_builtin(dtype, mode, clip, lengths, kernel):
    """The fused kernel and the composed one (Paddle's elementwise ops around rule.py: they
    keep the same NaNs as the built-in's Eigen expression, measured) against the built-in."""
    seed = 7 + sum(lengths)
    expected = _run("builtin", dtype, lengths, mode, clip, seed)
    actual = _run(kernel, dtype, lengths, mode, clip, seed)
    _assert_same_bits(expected, actual, lengths)


@pytest.mark.parametrize("clip", ["global", "norm"])
@pytest.mark.parametrize("signs", [(True, False), (False, True)], ids=["-+", "+-"])
@pytest.mark.parametrize("size,first,second", [(16385, 100, 5000), (20000, 10, 12000),
                                               (70001, 10, 30000)])
def test_nan_bits_of_a_large_member(size, first, second, signs, clip):
    """A bucket member larger than a leaf of Paddle's tree reduction (8192 floats): two NaNs of
    opposite signs in different leaves meet in the tree. From the second step the buckets'
    norms come from the kernel (the global norm's: Paddle's own where they hold a NaN,
    ``_clip.fix_large_nan_norms``)."""
    dtype = "float32"

    def run(kind):
        params = []
        for n in (size, 5, 5):
            p = paddle.create_parameter([n], dtype)
            p.set_value(np.ones(n, dtype))
            params.append(p)
        options = dict(learning_rate=0.1, momentum=0.9, parameters=params,
                       grad_clip=_clip(clip))
        optimizer = (paddle.optimizer.Momentum(**options) if kind == "builtin"
                     else paddle_momentum.Momentum(kernel=kind, **options))
        for p in params:
            (p * 0.5).sum().backward()
        optimizer.step()
        optimizer.clear_grad()
        for k, p in enumerate(params):
            g = np.full([p.size], 0.5, dtype)
            if k == 0:
                g[first] = -np.nan if signs[0] else np.nan
                g[second] = -np.nan if signs[1] else np.nan
            (p * paddle.to_tensor(g)).sum().backward()
        optimizer.step()
        return [(name, t.numpy().view(np.uint32).copy()) for p in params
                for name, t in (("param", p),
                                ("velocity", optimizer._get_accumulator_master("velocity", p)),
                                ("grad", p.grad))]

    _assert_same_bits([run("builtin")], [run("auto")], [size, 5, 5])
