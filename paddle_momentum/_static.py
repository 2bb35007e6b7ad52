"""Static-graph op emission (PIR and the legacy IR) for ``Momentum``.

``minimize(loss)`` in a static program goes through the base class (backward, then its
optimization pass, which calls the optimizer's hooks); the hooks hand the work to
:class:`StaticOps`: clip (:func:`clip_gradients`) -> regularize (the base class) -> our update
ops, one per parameter or one fused op per batch of parameters that share a batch key
(``ParamSettings.batch_key``).
"""

from __future__ import annotations

import paddle

from . import _clip, _compat, _dispatch, implementations


def clip_gradients(grad_clip, params_grads, sort_by_name=False):
    """The static chain's clip, in parameter order, then the built-in's legacy sort.

    The built-in's legacy path sorts by parameter name before clipping. We clip first, in
    parameter order, so a global-norm sum adds up in the same order as in dygraph (the
    built-in's global-norm clip does not run under the legacy IR at all); every other clip
    is per parameter, so the order changes no number.
    """
    if grad_clip is not None and params_grads:
        with _compat.optimizer_ops_guard(params_grads):
            params_grads = _clip.clip_gradients(grad_clip, params_grads)
    elif _compat.in_legacy_static():  # the legacy ``set_gradient_clip`` API
        params_grads = paddle.nn.clip.append_gradient_clip_ops(params_grads)
    if sort_by_name:
        params_grads = sorted(params_grads, key=lambda pair: pair[0].name)
    return params_grads


class StaticOps:
    """The update ops of one optimizer in static programs. It receives the settings
    (``_reading.Reader``), the state (``_state.State``) and the ``kernel`` option; the
    learning rate of a parameter comes from ``lr_of(param)`` (the base class's op, which the
    optimizer's hook passes)."""

    def __init__(self, settings, state, kernel, rule):
        self.settings = settings
        self.state = state
        self.kernel = kernel
        self.rule = rule
        self._batches = {}
        self._can = None

    def add(self, param, grad, lr_of):
        """One parameter's update: ops now, or a place in a batch (:meth:`finish` emits one
        op per batch: the per-op cost of an Executor step dominates small models)."""
        settings = self.settings.param(param, self.settings.group(None))
        # (a program is built once and run many times: its kernel is built now if need be)
        can = self._can = self._can or _dispatch.capabilities(self.rule, self.kernel,
                                                                  wait=True)
        implementation = _dispatch.choose(self.kernel, can, param, grad, settings)
        if implementation.batched:
            key = settings.batch_key() + (settings.lr_scale,)
            self._batches.setdefault(key, []).append((param, grad, settings))
            return
        self.state.update(param, grad, settings, implementation, lr_of(param), can)

    def finish(self, lr_of):
        """One fused multi-tensor op per batch collected by :meth:`add`, or one op per
        parameter for a batch too small to repay the list ops a multi op needs."""
        batches, self._batches = self._batches, {}
        can, self._can = self._can, None
        for entries in batches.values():
            each = _dispatch.static_batch_member(len(entries))
            if each is not None:
                for param, grad, settings in entries:
                    with _compat.optimizer_ops_guard([(param, grad)]):
                        self.state.update(param, grad, settings, each, lr_of(param), can)
                continue
            params = [p for p, _, _ in entries]
            settings = entries[0][2]
            with _compat.optimizer_ops_guard([(p, g) for p, g, _ in entries]):
                implementations.fused_multi(
                    can.ops, params, [g for _, g, _ in entries],
                    [self.state.velocity_of(p) for p in params],
                    None, lr_of(params[0]), **settings.rule_options())

    def discard(self):
        """Forget batches of a pass that did not finish."""
        self._batches, self._can = {}, None
