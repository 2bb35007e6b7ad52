"""The momentum update rule: a pure function of Paddle tensors.

This is the reference implementation every faster path is tested against. It knows nothing
about execution modes, parameter groups, state dicts or master weights: the caller hands it
tensors in the compute dtype and writes the results back.
"""

from __future__ import annotations

import numpy as np
import paddle


def as_float32_attribute(value: float) -> float:
    """Round a Python scalar through float32, as Paddle's kernels do with their attributes.

    The built-in kernel receives ``mu``, the L2 coefficient and ``rescale_grad`` as float32
    attributes and casts them to the compute type, so for float64 parameters ``mu`` is
    ``double(float32(0.9)) = 0.8999999761581421``, not 0.9.
    """
    return float(np.float32(value))


def attribute(value: float, like):
    """``value`` as the built-in's kernel takes a scalar attribute: rounded through float32,
    as a 0-d tensor of ``like``'s dtype. A tensor times a Python number would be Paddle's
    ``scale`` op instead (``x * s + 0``: -0.0 becomes +0.0; a float64 static program rounds
    ``s`` to float32), not the plain multiply of the built-in's kernel."""
    return paddle.full([], as_float32_attribute(value), like.dtype)


def _exact(tensor):
    return tensor


# ---- The gradient ops the built-in applies before its update, when the clip is Paddle's own
# ClipGradByValue (with number bounds) and the regularizer Paddle's own L1Decay: in dygraph the
# optimizer calls these in their place (kernel="composed" and the fallback) and the fused
# kernel runs them as generated from here; a subclass, or any other clip or regularizer, runs
# its own code, as in a static program. Each Paddle op here rounds in the gradient's dtype.

def clip_by_value(grad, low: float, high: float):
    r"""``ClipGradByValue``: :math:`g' = \min(\max(g, low), high)`, Paddle's ``clip`` (a NaN
    gradient stays itself)."""
    return paddle.clip(grad, low, high)


def l1_decay(param, grad, coeff: float):
    r"""``L1Decay``'s term added to the gradient: :math:`g' = g + (\mathrm{sign}(p) \cdot c + 0)`
    (Paddle's ``sign``, then its ``scale`` op, which takes ``c`` as given: an int exactly, a
    Tensor's value now; then ``add_n``; ``sign(-0.0)`` is +0.0)."""
    return paddle.add_n([grad, paddle.scale(paddle.sign(param), coeff)])


def momentum_update(
    param,
    grad,
    velocity,
    lr,
    *,
    momentum: float,
    use_nesterov: bool = False,
    l2_coeff: float | None = None,
    rescale_grad: float = 1.0,
    round_result=None,
    dampening: float = 0.0,
    maximize: bool = False,
    decoupled_weight_decay: float = 0.0,
    first_step=False,
):
    r"""One momentum step; returns ``(new_param, new_velocity)``.

    With :math:`\mu` = ``momentum``, :math:`c` = ``l2_coeff``, :math:`s` = ``rescale_grad``,
    :math:`\eta` = ``lr`` (a 0-d tensor):

    .. math::

        g' &= p \cdot c + s \cdot g \\
        v' &= v \cdot \mu + g' \\
        p' &= p - \eta \cdot v'                          && \text{(plain)} \\
        p' &= p - (g' + v' \cdot \mu) \cdot \eta          && \text{(Nesterov)}

    Every operation is rounded in the tensors' dtype, in exactly this order and without fused
    multiply-add: that is what makes the result equal to Paddle's CPU kernel bit for bit.
    The Nesterov form must stay ``(g' + v'mu) * lr``: ``g'lr + v'mu lr`` rounds differently.
    ``s`` is skipped when it is 1 (multiplying by 1 is exact anyway). ``l2_coeff=None`` means
    no fused decay; a coefficient of 0.0 is still applied, as in the built-in (``p*0`` is NaN
    for an infinite ``p``). Scalars enter as 0-d tensors (:func:`attribute`), so each product
    is a plain multiply, signed zeros kept. Where both operands of an addition are NaN,
    Paddle's ``add`` keeps the first one's: the operands are written in the order that keeps
    the NaN the built-in's kernel keeps (``docs/research/nan_bits.md``).

    This function is the only copy of the arithmetic: the fused kernel's loop body is
    generated from it (``python -m paddle_momentum build --show``; ``docs/change_the_rule.md``).

    ``round_result`` (optional) is applied to every intermediate result. It emulates the
    arithmetic of a narrower dtype (float16/bfloat16) while computing in float32: on CPU Paddle
    has no float16 arithmetic kernels.

    Options from ``torch.optim.SGD`` (off by default, Paddle's behaviour): ``maximize`` negates
    the gradient first; ``dampening`` :math:`d` makes the velocity
    :math:`v' = v \cdot \mu + (1 - d) \cdot g'`, except at the parameter's ``first_step``,
    where, as torch starts its momentum buffer, :math:`v' = g'` (undamped; ``first_step`` is
    a bool, or in a static program a 0-d tensor that is positive at the first step), and
    without momentum (:math:`\mu = 0`: torch keeps no buffer, so nothing is damped);
    ``decoupled_weight_decay`` :math:`\lambda` (SGDW) shrinks the parameter before the step,
    :math:`p \leftarrow p \cdot (1 - \eta \lambda)`, outside the velocity.
    """
    rnd = round_result or _exact
    mu = attribute(momentum, velocity)
    if maximize:
        grad = -grad
    if rescale_grad != 1.0:
        grad = rnd(grad * attribute(rescale_grad, grad))
    if l2_coeff is not None:
        grad = rnd(rnd(param * attribute(l2_coeff, param)) + grad)
    decayed = rnd(velocity * mu)
    # (dampening without momentum: torch keeps no buffer, so nothing is damped)
    if dampening and momentum != 0 and first_step is True:
        velocity = grad
    elif dampening and momentum != 0:
        damped = rnd(decayed + rnd(grad * attribute(1.0 - dampening, grad)))
        velocity = damped if first_step is False else paddle.where(first_step > 0, grad, damped)
    elif l2_coeff is not None:  # (the built-in keeps g''s NaN here: the decayed one's above)
        velocity = rnd(grad + decayed)
    else:
        velocity = rnd(decayed + grad)
    if decoupled_weight_decay:
        shrink = rnd(lr * attribute(decoupled_weight_decay, lr))
        param = rnd(param * rnd(attribute(1.0, lr) - shrink))
    if use_nesterov:
        step = rnd(rnd(rnd(velocity * mu) + grad) * lr)
    else:
        step = rnd(lr * velocity)
    return rnd(param - step), velocity
