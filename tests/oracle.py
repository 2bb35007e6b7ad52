"""An independent numpy float oracle for the rows where the built-in cannot be the reference.

Semantics (docs/differences.md): scalars are float32 attributes cast to the compute dtype;
float32/float64 compute in their own dtype; float16/bfloat16 with a master weight compute in
float32 on the master and store the parameter as its cast (to nearest, ties to even; float16
toward zero on releases whose conversion does that); without a master weight every operation
is computed in float32 and its result rounded to the narrow dtype.
"""

from __future__ import annotations

import numpy as np


def round_to_bfloat16(x):
    """Round float32 values to the nearest bfloat16 (ties to even), returned as float32."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


def _paddle_float16_truncates() -> bool:
    """Whether this Paddle release converts float32 to float16 toward zero (3.0.0 and 3.1.1
    on CPU) rather than to the nearest (3.2 and later): 1 + 3/4 ulp tells them apart. Ours
    converts with Paddle's own conversion, so the oracle follows the release it runs on."""
    import paddle

    probe = np.array([1 + 0.75 * 2.0 ** -10], dtype=np.float32)
    return paddle.to_tensor(probe).astype("float16").astype("float32").numpy()[0] == 1.0


PADDLE_FLOAT16_TRUNCATES = _paddle_float16_truncates()


def round_to_float16(x):
    """float32 values rounded to float16 as Paddle converts them (to nearest, ties to even;
    toward zero where PADDLE_FLOAT16_TRUNCATES), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    nearest = x.astype(np.float16)
    if PADDLE_FLOAT16_TRUNCATES:
        away = np.abs(nearest.astype(np.float32)) > np.abs(x)
        nearest = np.where(away, np.nextafter(nearest, np.float16(0)), nearest)
    return nearest.astype(np.float32)


ROUNDING = {"float16": round_to_float16, "bfloat16": round_to_bfloat16}


class OracleParam:
    """One parameter's numpy state: the stored parameter, velocity and optional master."""

    def __init__(self, initial, dtype, multi_precision):
        self.dtype = dtype
        narrow = dtype in ROUNDING
        self.compute = np.float32 if narrow else np.dtype(dtype).type
        self.has_master = narrow and multi_precision
        # Narrow values are carried as float32 arrays holding exactly representable values.
        self.param = np.asarray(initial, dtype=self.compute)
        self.velocity = np.zeros_like(self.param)
        self.started = False
        self.round = ROUNDING[dtype] if narrow and not multi_precision else (lambda x: x)
        self.store = ROUNDING.get(dtype, lambda x: x)

    def step(self, grad, lr, *, momentum, nesterov=False, l2=0.0, rescale=1.0, dampening=0.0,
             maximize=False, decoupled=0.0):
        t, r = self.compute, self.round
        scalar = lambda value: t(np.float32(value))  # noqa: E731  (float32 attribute -> T)
        g = np.asarray(grad, dtype=t)
        lr = t(lr)
        mu = scalar(momentum)
        if maximize:  # torch.optim.SGD(maximize=True): ascend the gradient
            g = -g
        if rescale != 1.0:
            g = r(g * scalar(rescale))
        if l2:
            g = r(r(self.param * scalar(l2)) + g)
        if dampening and mu == 0:  # torch.optim.SGD: no momentum, no buffer, no dampening
            v = r(r(self.velocity * mu) + g)
        elif dampening and not self.started:  # torch.optim.SGD: the buffer starts as g
            v = g
        elif dampening:  # torch.optim.SGD's dampening, after the first step
            v = r(r(self.velocity * mu) + r(g * scalar(1.0 - dampening)))
        else:
            v = r(r(self.velocity * mu) + g)
        if decoupled:  # SGDW: shrink the parameter outside the velocity
            self.param = r(self.param * r(t(1.0) - r(lr * scalar(decoupled))))
        if nesterov:
            update = r(r(g + r(v * mu)) * lr)
        else:
            update = r(lr * v)
        self.param = r(self.param - update)
        self.velocity = v
        self.started = True
        return self.stored_param

    @property
    def stored_param(self):
        return self.store(self.param) if self.has_master else self.param
