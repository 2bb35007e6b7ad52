"""The dygraph step as a plan of units, each checked against what it was built for.

A step first makes a plan, per group: the group's settings, derived now
(``_settings.group_settings``); the flat buckets that can be updated whole (each has checked
that nothing it was built from changed, see ``_flat``); and every other parameter with a
gradient as a single-parameter unit with its settings derived now. Then, in the built-in's
order: checks (which raise before anything is written) -> clip -> non-fused regularization ->
state -> ``found_inf`` -> updates.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import paddle
from paddle.base import framework
from paddle.base.layer_helper import LayerHelper

from . import _clip, _compat, _flat, _kernel, implementations
from ._settings import (BY_NORM, GLOBAL_NORM, GroupSettings, ParamSettings,
                        complete_gradient_ops, fused_gradient_ops)


@dataclasses.dataclass
class GroupPlan:
    """One group's part of a step: ``buckets`` are ``(bucket, its gradients)`` to update
    whole; ``units`` the ``(param, grad, settings)`` to update one by one."""

    group: dict | None
    settings: GroupSettings
    buckets: list
    units: list
    # ClipGradByGlobalNorm over buckets: the factor the kernel multiplies their gradients by
    # (a [1] tensor; None: not clipped this step, or clipped already)
    global_norm_factor: object = None


class DygraphStep:
    """The dygraph half of ``Momentum`` (a mixin: it uses the optimizer's settings and state
    methods)."""

    def _plan(self, only=None, use_main_grad=True):
        """The step's :class:`GroupPlan` per group; ``only`` (a set of ids) restricts it to
        those parameters (``minimize(parameters=...)``), without buckets. The built-in's
        ``step()`` takes ``main_grad`` where it is set (not in groups), its ``minimize()``
        never."""
        plan = []
        for group, params in self._group_params():
            group_settings = self._group_settings(group)
            buckets = []
            if self._fused_active() and only is None and self._flat.built(group):
                state = self._flat.ready(
                    group, params, group_settings.structure(), self._velocity_dict(),
                    self._master_weights,
                    lambda param: self._bucket_key(param, self._settings_of(param,
                                                                            group_settings)),
                    clipped=group_settings.grad_clip is not None)
                if state is None:  # something a bucket was built from changed: rebuild all
                    self._flat.clear()
                    return self._plan(only, use_main_grad)
                buckets, by_member = state
                if not by_member:
                    params = self._flat.outside_buckets[id(group)]
                elif buckets:
                    members = {id(p) for bucket, _ in buckets for p in bucket.params}
                    params = [p for p in params if id(p) not in members]
            units = [(param, grad, self._settings_of(param, group_settings))
                     for param, grad in self._gradient_pairs(
                         params, use_main_grad and group is None, only)]
            plan.append(GroupPlan(group, group_settings, buckets, units))
        return plan

    def _group_params(self):
        """``[(group or None, its parameters)]``."""
        groups = self._param_groups if self._grouped() else [None]
        return [(group, self._params_of(group)) for group in groups]

    def _params_of(self, group):
        return group["params"] if group is not None else self._param_groups

    @staticmethod
    def _gradient_pairs(params, use_main_grad, only=None):
        """``[(param, grad)]`` for the trainable ``params`` (in ``only``) with a gradient
        (``main_grad`` where it is set, with ``use_main_grad``)."""
        grads = [None if p.stop_gradient or (only is not None and id(p) not in only)
                 else _compat.gradient_of(p, use_main_grad) for p in params]
        return [(p, g) for p, g in zip(params, grads) if g is not None]

    def _check_units(self, plan):
        """Raise, before anything is written, for a gradient or a parameter that the update
        cannot take (the built-in raises these from its kernel, mid-step)."""
        for group_plan in plan:
            for param, grad, settings in group_plan.units:
                if not _compat.is_float_dtype(grad.dtype):
                    raise TypeError(
                        f"the gradient of {param.name} must be a float tensor, got {grad.dtype}"
                    )
                # The built-in's kernel takes a main_grad of another shape with as many
                # elements, and refuses another dtype (but float32 for a master weight).
                grad_dtype = _compat.dtype_name(grad.dtype)
                if grad_dtype != settings.dtype and not (settings.master_weight
                                                         and grad_dtype == "float32"):
                    raise ValueError(f"the gradient of {param.name} is {grad_dtype}, the "
                                     f"parameter {settings.dtype}")
                if not _compat.is_sparse(grad) and grad._numel() != param._numel():
                    raise ValueError(
                        f"the gradient of {param.name} has shape {list(grad.shape)}, "
                        f"expected {list(param.shape)}"
                    )
                self._check_state_fits(param, settings)

    def _found_inf(self) -> bool:
        """True when a GradScaler flagged inf/NaN gradients: then the step changes nothing."""
        found_inf = self._get_auxiliary_var("found_inf")
        if _compat.is_tensor(found_inf):
            found_inf = bool(found_inf)
            self._set_auxiliary_var("found_inf", found_inf)
        return bool(found_inf)

    def _optimize(self, plan):
        """The step, in the built-in's order: clip -> regularize -> state -> found_inf -> update.

        Everything that can fail on bad input runs before the first parameter is written.
        """
        self._check_units(plan)
        for group_plan in plan:
            units = group_plan.units
            if any(BY_NORM in bucket.key[-1].split(";") for bucket, _ in group_plan.buckets):
                _clip.check_clip_norm(group_plan.settings.grad_clip)
            if any(_norm_bucket(bucket) for bucket, _ in group_plan.buckets):
                units = self._clip_by_global_norm(group_plan)
            elif units and group_plan.settings.grad_clip is not None:
                clipped = _clip.clip_gradients(group_plan.settings.grad_clip,
                                               [(p, g) for p, g, _ in units])
                units = [(p, g, s) for (p, g), (_, _, s) in zip(clipped, units)]
            group_plan.units = [(p, self._regularized(p, g, s), s) for p, g, s in units]
        with paddle.static.program_guard(
            paddle.static.default_main_program(), paddle.static.default_startup_program()
        ):
            for _ in plan:  # the built-in makes one helper per group (a unique name each)
                self.helper = LayerHelper(self.__class__.__name__)
            self._prepare_learning_rate()
            block = framework.default_main_program().global_block()
            repeated = None
            for group_plan in plan:
                if self._fused_active() and not self._flat.built(group_plan.group):
                    if repeated is None:
                        repeated = self._repeated_params()
                    # Bucket members' state is created inside the buckets' buffers.
                    self._build_buckets(group_plan, repeated)
                self._create_accumulators(block, [p for p, _, _ in group_plan.units])
            if self._found_inf():
                for group_plan in plan:  # the built-in clipped the gradients all the same
                    for bucket, _ in group_plan.buckets:
                        if _norm_bucket(bucket):
                            _clip.scale_gradients(
                                zip(bucket.params, _compat.all_gradients(bucket.params)),
                                group_plan.global_norm_factor)
                return
            for group_plan in plan:
                for bucket, grads in group_plan.buckets:
                    self._update_bucket(bucket, grads, group_plan)
                for param, grad, settings in group_plan.units:
                    if param._is_initialized():  # the built-in skips these too (e.g. empty)
                        self._update_param(param, grad, settings)

    def _clip_by_global_norm(self, group_plan: GroupPlan):
        """``ClipGradByGlobalNorm`` over a group with flat buckets, as the built-in computes
        it: each gradient's squared norm (the buckets' in one kernel call each), summed per
        dtype in the group's order of parameters, then the factor. The units' gradients are
        multiplied here (returned: the new units), the buckets' in the kernel
        (``group_plan.global_norm_factor``)."""
        positions = self._flat.positions(group_plan.group, self._params_of(group_plan.group))
        found = {}  # dtype class -> ([positions arrays], [squared norms tensors])

        def add(kind, where, norms):
            entry = found.setdefault(kind, ([], []))
            entry[0].append(where)
            entry[1].append(norms)

        for bucket, table in group_plan.buckets:
            if _norm_bucket(bucket):
                norms = implementations.squared_norms(bucket.key[0], table)
                add(bucket.key[0], bucket.positions(positions),
                    _clip.fix_large_nan_norms(norms, bucket.key[0], bucket.params,
                                              bucket.sizes))
        seen = {}
        for param, grad, _ in group_plan.units:
            occurrence = seen[id(param)] = seen.get(id(param), -1) + 1
            if getattr(param, "need_clip", True) is not False:
                norm = _clip.squared_norm(grad)
                kind = "float16" if _compat.is_low_precision(norm.dtype) else \
                    _compat.dtype_name(norm.dtype)
                add(kind, np.array(positions[id(param)][occurrence:occurrence + 1]), norm)
        sums = {}
        for kind, (where, norms) in found.items():
            where = np.concatenate(where)
            order = np.argsort(where, kind="stable")
            sums[kind] = paddle.concat(norms) if len(norms) > 1 else norms[0]
            if np.any(order[1:] < order[:-1]):
                sums[kind] = paddle.gather(sums[kind], paddle.to_tensor(order))
        factor = _clip.global_norm_factor(group_plan.settings.grad_clip, sums)
        group_plan.global_norm_factor = factor
        scaled = _clip.scale_gradients([(p, g) for p, g, _ in group_plan.units], factor)
        return [(p, g, s) for (p, g), (_, _, s) in zip(scaled, group_plan.units)]

    def _regularized(self, param, grad, settings: ParamSettings):
        """The gradient plus any non-fused regularization term (built-in: ``add_n``)."""
        if settings.regularizer is None:
            return grad
        term = settings.regularizer(param, grad, _compat.default_block(grad))
        return paddle.add_n([grad, term])

    def _bucket_key(self, param, settings: ParamSettings, grad=None):
        """``settings.batch_key()`` and the gradient ops the kernel does for it (a clip by
        value, an L1 decay: ``_settings.fused_gradient_ops``) when ``param`` (with ``grad``,
        when given) can join a flat bucket, else None."""
        gradient_ops = fused_gradient_ops(param, settings)
        if gradient_ops is None or settings.uses_main_grad or \
                _compat.is_tensor(settings.lr_scale):
            return None
        if gradient_ops and (_kernel.gradient_table() is None or (
                not set(gradient_ops.split(";")).isdisjoint((GLOBAL_NORM, BY_NORM))
                and not _kernel.norm_reductions_exact())):
            return None
        grad = param if grad is None else grad
        if (param._numel() == 0 or not param._is_initialized() or _compat.is_sparse(grad)
                or not implementations.fused_supports(param, grad)):
            return None
        return settings.batch_key() + (gradient_ops,)

    def _repeated_params(self):
        """The ids of parameters listed more than once (in one group or across groups): the
        built-in updates them once per listing, so they stay single-parameter units."""
        seen, repeated = set(), set()
        for _, params in self._group_params():
            for param in params:
                (repeated if id(param) in seen else seen).add(id(param))
        return repeated

    def _build_buckets(self, group_plan: GroupPlan, repeated):
        """Put the group's eligible parameters (not in ``repeated``) into flat buckets, one
        per batch key (once per group, and again whenever something they were built from
        changes); the buckets join ``group_plan.buckets``, the rest stay units."""
        members, rest = {}, []
        for param, grad, settings in group_plan.units:
            key = None if id(param) in repeated else self._bucket_key(param, settings, grad)
            if key is None:
                rest.append((param, grad, settings))
            else:
                members.setdefault(key, []).append((param, grad, settings))
        buckets = []
        for key, entries in members.items():
            bucket = _flat.FlatBucket(
                key, [p for p, _, _ in entries], self._velocity_of,
                self._create_master_weight if entries[0][2].master_weight else None,
                self._zero_velocities)
            buckets.append(bucket)
            grads = bucket.gradients(self._velocity_dict(), self._master_weights)
            if isinstance(grads, str):  # not whole this step: its members stay units
                rest.extend(entries)
            else:
                group_plan.buckets.append((bucket, grads))
        in_bucket = {id(p) for bucket in buckets for p in bucket.params}
        params = self._params_of(group_plan.group)
        outside = [p for p in params if id(p) not in in_bucket]
        self._flat.add_group(group_plan.group, params, group_plan.settings.structure(), buckets,
                             outside, self._master_weights)
        group_plan.units = rest

    def _update_bucket(self, bucket, grads, group_plan: GroupPlan):
        """One fused call updates every member of ``bucket``."""
        first = bucket.params[0]
        settings = self._settings_of(first, group_plan.settings)
        update, params = ((implementations.fused_table, settings.dtype)
                          if bucket.table is not None
                          else (implementations.fused_multi, bucket.param_buffers))
        options = settings.rule_options()
        if bucket.table is not None:
            factor = None
            if group_plan.global_norm_factor is not None and _norm_bucket(bucket):
                factor = group_plan.global_norm_factor.astype(settings.dtype).item()
            options["gradient_ops"] = complete_gradient_ops(
                bucket.key[-1], group_plan.settings.grad_clip, factor)
        update(params, grads, bucket.velocity_buffers, bucket.master_buffers,
               self._param_lr(first, settings), **options)


def _norm_bucket(bucket) -> bool:
    """The bucket's members take part in their group's global-norm clip."""
    return GLOBAL_NORM in bucket.key[-1].split(";")
