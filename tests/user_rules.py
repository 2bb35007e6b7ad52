"""Rules as researchers write them, in a module of their own (the corpus of
tests/test_rule_corpus.py: copied beside a user's script, imported from there, passed as
``Momentum(rule=...)`` to the installed package)."""

import numpy as np
import paddle

from paddle_momentum.rule import attribute, momentum_update

NU = 0.7  # QHM's mix (a module constant, read when the rule is translated)
LIMIT = np.float32(0.125)  # a numpy scalar constant


def lr_inside(param, grad, velocity, lr, *, momentum):
    """The seeds' formulation (d2l's momentum chapter, MXNet's SGD, the PyTorch tutorial):
    the learning rate inside the velocity, v = mu*v + lr*g; p = p - v."""
    velocity = velocity * attribute(momentum, velocity) + lr * grad
    return param - velocity, velocity


def half_velocity(param, grad, velocity, lr, **options):
    """A wrapper of the package's rule, forwarding every setting: half the new velocity kept."""
    new_param, new_velocity = momentum_update(param, grad, velocity, lr, **options)
    return new_param, new_velocity * 0.5


def _mix(velocity, grad, nu):
    return velocity * nu + grad * (1.0 - nu)


def qhm(param, grad, velocity, lr, *, momentum):
    """Quasi-hyperbolic momentum (Ma & Yarats, 2019): a helper and a module constant."""
    velocity = velocity * attribute(momentum, velocity) + grad
    return param - lr * _mix(velocity, grad, NU), velocity


def _mix_evenly(velocity, grad, nu):  # (put in _mix's place during training)
    return (velocity + grad) * 0.5


def clipped_velocity(param, grad, velocity, lr, *, momentum):
    """The velocity clipped to [-LIMIT, LIMIT] (paddle.clip, a numpy constant)."""
    velocity = paddle.clip(velocity * attribute(momentum, velocity) + grad, -LIMIT, LIMIT)
    return param - lr * velocity, velocity


def sign_agreeing(param, grad, velocity, lr, *, momentum):
    """paddle.where on a tensor comparison: a full step where gradient and velocity agree."""
    velocity = velocity * attribute(momentum, velocity) + grad
    step = paddle.where(grad * velocity > 0, lr * velocity, lr * velocity * 0.25)
    return param - step, velocity


def bounded(param, grad, velocity, lr, *, momentum):
    """abs, sign, maximum and minimum."""
    raw = velocity * attribute(momentum, velocity) + grad
    ceiling = paddle.abs(grad) * 10.0 + 1.0
    velocity = paddle.maximum(paddle.minimum(raw, ceiling), -ceiling)
    return param - lr * (velocity + paddle.sign(grad) * 0.01), velocity


def integers(param, grad, velocity, lr, *, momentum):
    """Integer literals: a tensor times an int, divided by one, an int minus a tensor."""
    velocity = velocity * attribute(momentum, velocity) + grad * 2
    return param - lr * velocity / 3, 1 - (1 - velocity)


def branches(param, grad, velocity, lr, *, momentum, use_nesterov=False):
    """A local assigned in both branches of an if on a setting."""
    mu = attribute(momentum, velocity)
    velocity = velocity * mu + grad
    if use_nesterov:
        step = (grad + velocity * mu) * lr
    else:
        step = lr * (velocity + grad * 0.5)
    return param - step, velocity


def square_root(param, grad, velocity, lr, *, momentum):
    """paddle.sqrt: refused (Paddle's CPU sqrt is approximate in AVX packets)."""
    velocity = velocity * attribute(momentum, velocity) + grad
    return param - lr * velocity / (paddle.sqrt(paddle.abs(velocity)) + 1.0), velocity


def tanh_step(param, grad, velocity, lr, *, momentum):
    """paddle.tanh: no C++ counterpart."""
    velocity = velocity * attribute(momentum, velocity) + grad
    return param - lr * paddle.tanh(velocity), velocity


def looping(param, grad, velocity, lr, *, momentum):
    """A loop: no C++ counterpart."""
    for _ in range(2):
        velocity = velocity * attribute(momentum, velocity) + grad
    return param - lr * velocity, velocity
