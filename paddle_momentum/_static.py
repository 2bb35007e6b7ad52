"""Static-graph op emission (PIR and the legacy IR) for ``Momentum``.

``minimize(loss)`` in a static program goes through the base class (backward), then here:
clip -> regularize -> our update ops, one per parameter or one fused op per batch of
parameters that share a batch key (the same key dygraph buckets use,
``ParamSettings.batch_key``).
"""

from __future__ import annotations

import paddle
from paddle.regularizer import L2Decay

from . import _clip, _compat, _dispatch, implementations


class StaticOps:
    """The static half of ``Momentum`` (a mixin: it uses the optimizer's settings and state
    methods and the base class's optimization pass)."""

    def _apply_optimize(self, loss, startup_program, params_grads, param_group_idx=0):
        if _compat.in_dygraph():
            return super()._apply_optimize(loss, startup_program, params_grads, param_group_idx)
        if _compat.in_pir():
            program, startup = (paddle.static.default_main_program(),
                                paddle.static.default_startup_program())
        else:
            program, startup = loss.block.program, startup_program
        with paddle.static.program_guard(program, startup):
            if _compat.in_pir():  # the built-in sorts only under the legacy IR here
                return self._append_update_ops(params_grads)
            return self.apply_gradients(params_grads)

    def apply_gradients(self, params_grads):
        """Static graph: append clip, regularization and update ops for ``params_grads``."""
        return self._append_update_ops(params_grads, sort_by_name=not hasattr(self, "_sorted"))

    def _append_update_ops(self, params_grads, sort_by_name=False):
        """The static chain in the built-in's order: clip -> regularize -> update ops.

        The built-in's legacy path sorts by parameter name before clipping. We clip first, in
        parameter order, so a global-norm sum adds up in the same order as in dygraph (the
        built-in's global-norm clip does not run under the legacy IR at all); every other clip
        is per parameter, so the order changes no number.
        """
        if self._grad_clip is not None and params_grads:
            with _compat.optimizer_ops_guard(params_grads):
                params_grads = _clip.clip_gradients(self._grad_clip, params_grads)
        elif _compat.in_legacy_static():  # the legacy ``set_gradient_clip`` API
            params_grads = paddle.nn.clip.append_gradient_clip_ops(params_grads)
        if sort_by_name:
            params_grads = sorted(params_grads, key=lambda pair: pair[0].name)
        params_grads = self.append_regularization_ops(params_grads, self.regularization)
        self._static_batches = {}
        if _compat.in_pir():
            return self._pir_create_optimization_pass(params_grads)
        return self._create_optimization_pass(params_grads)

    def _append_optimize_op(self, block, param_and_grad):
        """Static-graph hook of the base class, called per parameter: the fused kernel's
        parameters are batched (``_finish_update`` emits one op per batch: the per-op cost of
        an Executor step dominates small models); others get the rule's ops now."""
        param, grad = param_and_grad
        settings = self._settings_of(param, self._group_settings(None))
        implementation = _dispatch.choose(self._kernel, _dispatch.capabilities(), param, grad,
                                          settings)
        if implementation == _dispatch.STATIC_BATCH:
            key = settings.batch_key() + (settings.lr_scale,)
            self._static_batches.setdefault(key, []).append((param, grad, settings))
            return
        self._update_param(param, grad, settings, implementation)

    def _finish_update(self, block, parameters_and_grads):
        """Static graph: one fused multi-tensor op per batch collected above, or one op per
        parameter for a batch too small to repay the list ops a multi op needs."""
        batches, self._static_batches = self._static_batches, {}
        for entries in batches.values():
            if not _dispatch.static_batch_worth_it(len(entries)):
                for param, grad, settings in entries:
                    with _compat.optimizer_ops_guard([(param, grad)]):
                        self._update_param(param, grad, settings, _dispatch.FUSED)
                continue
            params = [p for p, _, _ in entries]
            settings = entries[0][2]
            with _compat.optimizer_ops_guard([(p, g) for p, g, _ in entries]):
                implementations.fused_multi(
                    params, [g for _, g, _ in entries],
                    [self._get_accumulator_master(self._velocity_acc_str, p) for p in params],
                    None, self._param_lr(params[0], settings), **settings.rule_options())

    def _create_regularization_of_grad(self, param, grad, regularization=None):
        # An L2Decay set through ParamAttr is fused into the update, not added here.
        if isinstance(getattr(param, "regularizer", None), L2Decay):
            return grad
        return super()._create_regularization_of_grad(param, grad, regularization)
