"""The dygraph step as a plan of units, each checked against what it was built for.

A step first makes a plan, per group: the group's settings, derived now
(``_settings.group_settings``); the flat buckets that can be updated whole (each has checked
that nothing it was built from changed, see ``_flat``); and every other parameter with a
gradient as a single-parameter unit with its settings derived now. Then, in the built-in's
order: checks (which raise before anything is written, every step: the units' gradients and
state, a norm clip's ``clip_norm``) -> clip -> non-fused regularization -> state ->
``found_inf`` -> updates. Which implementation updates a unit, and which parameters join a
bucket, is ``_dispatch.choose``'s decision; a bucket's values for this step (learning-rate
scales and ``need_clip`` in its table rows, the clip's values as ``GradientOps``, the group's
settings) reach its one fused call without rebuilding it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import paddle
from paddle.nn.clip import ClipGradByValue
from paddle.regularizer import L1Decay

from . import _clip, _compat, _dispatch, _flat, _kernel, implementations, rule
from ._boundary import GradientOps
from ._settings import (GLOBAL_NORM_CLIP, NORM_CLIP, VALUE_CLIP, GroupSettings,
                        ParamSettings)


@dataclasses.dataclass
class GroupPlan:
    """One group's part of a step: ``buckets`` are ``(bucket, its gradients)`` to update
    whole; ``units`` the ``(param, grad, settings)`` to update one by one."""

    group: dict | None
    settings: GroupSettings
    buckets: list
    units: list
    can: _dispatch.Capabilities  # what this process can run (asked once per step)
    # ClipGradByGlobalNorm over buckets: the factor the kernel multiplies their gradients by
    # (a [1] tensor; None: not clipped this step, or clipped already)
    global_norm_factor: object = None


class DygraphStep:
    """The dygraph step of one optimizer: :meth:`plan`, then :meth:`prepare` (checks, clip,
    regularization), then :meth:`update`. It receives what it works on: the settings
    (``_settings.Reader``), the state (``_state.State``), the flat buckets
    (``_flat.FlatState``), the ``kernel`` option; the optimizer prepares the learning rate
    between :meth:`prepare` and :meth:`update`, as the built-in's step does."""

    def __init__(self, settings, state, flat, kernel, rule):
        self.settings = settings
        self.state = state
        self.flat = flat
        self.kernel = kernel
        self.rule = rule

    def plan(self, only=None, use_main_grad=True):
        """The step's :class:`GroupPlan` per group; ``only`` (a set of ids) restricts it to
        those parameters (``minimize(parameters=...)``), without buckets. The built-in's
        ``step()`` takes ``main_grad`` where it is set (not in groups), its ``minimize()``
        never."""
        plan = []
        can = _dispatch.capabilities(self.rule, self.kernel)
        settings_of, state = self.settings.param, self.state
        for group, params in self.settings.groups():
            group_settings = self.settings.group(group)
            buckets = []
            if (_dispatch.buckets_possible(self.kernel, can) and only is None
                    and self.flat.built(group)):
                ready = self.flat.ready(
                    group, params, group_settings.structure(), state.velocities(),
                    state.masters, lambda param: settings_of(param, group_settings),
                    lambda param, settings: _dispatch.bucket_key(self.kernel, can, param,
                                                                 settings),
                    clipped=group_settings.grad_clip is not None)
                if ready is None:  # something a bucket was built from changed: rebuild all
                    self.flat.clear()
                    return self.plan(only, use_main_grad)
                buckets, by_member = ready
                if group_settings.value("dampening"):
                    # torch's dampening starts each velocity undamped: members whose first
                    # update differs cannot share a call this step
                    mixed = {id(b) for b, _ in buckets
                             if not b.stepped and state.mixed_first_steps(b.params)}
                    by_member = by_member + [b for b, _ in buckets if id(b) in mixed]
                    buckets = [(b, table) for b, table in buckets if id(b) not in mixed]
                if buckets and not _fusable_clip_values(group_settings.grad_clip):
                    # bounds of another kind (None, a Tensor, ...): Paddle's own clip, member
                    # by member, this step
                    by_member = by_member + [bucket for bucket, _ in buckets]
                    buckets = []
                if not by_member:
                    params = self.flat.outside_buckets[id(group)]
                elif buckets:
                    members = {id(p) for bucket, _ in buckets for p in bucket.params}
                    params = [p for p in params if id(p) not in members]
            units = [(param, grad, settings_of(param, group_settings))
                     for param, grad in gradient_pairs(
                         params, use_main_grad and group is None, only)]
            plan.append(GroupPlan(group, group_settings, buckets, units, can))
        return plan

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
                self.state.check_fits(param, settings)

    def prepare(self, plan):
        """The first half of the step, in the built-in's order: checks (everything that can
        fail on bad input, before the first parameter is written), clip, non-fused
        regularization."""
        self._check_units(plan)
        for group_plan in plan:
            units = group_plan.units
            # what Paddle's clip ops check of the clip's values, every step, before anything
            # is written (the units' clip runs Paddle's own ops)
            clip = group_plan.settings.grad_clip
            if any(_clip_kind(bucket) == NORM_CLIP and bucket.clipped().any()
                   for bucket, _ in group_plan.buckets):
                _clip.check_clip_norm(clip)
            if any(_clip_kind(bucket) == VALUE_CLIP and bucket.clipped().any()
                   for bucket, _ in group_plan.buckets):
                _clip.check_clip_bounds(clip)
            if any(_norm_bucket(bucket) for bucket, _ in group_plan.buckets):
                units = self._clip_by_global_norm(group_plan)
            elif units and group_plan.settings.grad_clip is not None:
                clipped = _clip.clip_gradients(group_plan.settings.grad_clip,
                                               [(p, g) for p, g, _ in units])
                units = [(p, g, s) for (p, g), (_, _, s) in zip(clipped, units)]
            group_plan.units = [(p, _regularized(p, g, s), s) for p, g, s in units]

    def update(self, plan, lr, found_inf):
        """The second half: state (buckets built where none are, velocities created), then,
        unless ``found_inf`` (a GradScaler flagged inf/NaN gradients: nothing changes), every
        bucket's and unit's update with the global learning rate ``lr``."""
        repeated = None
        for group_plan in plan:
            if (_dispatch.buckets_possible(self.kernel, group_plan.can)
                    and not self.flat.built(group_plan.group)
                    and _fusable_clip_values(group_plan.settings.grad_clip)):
                if repeated is None:
                    repeated = self._repeated_params()
                # Bucket members' state is created inside the buckets' buffers.
                self._build_buckets(group_plan, repeated)
            for param, _, _ in group_plan.units:
                self.state.velocity_of(param)
        if found_inf():
            for group_plan in plan:  # the built-in clipped the gradients all the same
                for bucket, _ in group_plan.buckets:
                    if _norm_bucket(bucket):
                        _clip.scale_gradients(
                            zip(bucket.params, _compat.all_gradients(bucket.params)),
                            group_plan.global_norm_factor)
            return
        for group_plan in plan:
            for bucket, grads in group_plan.buckets:
                self._update_bucket(bucket, grads, group_plan, lr)
            for param, grad, settings in group_plan.units:
                if param._is_initialized():  # the built-in skips these too (e.g. empty)
                    self.state.update(param, grad, settings, _dispatch.choose(
                        self.kernel, group_plan.can, param, grad, settings),
                        param_lr(lr, settings), group_plan.can)

    def _clip_by_global_norm(self, group_plan: GroupPlan):
        """``ClipGradByGlobalNorm`` over a group with flat buckets, as the built-in computes
        it: each gradient's squared norm (the buckets' in one kernel call each), summed per
        dtype in the group's order of parameters, then the factor. The units' gradients are
        multiplied here (returned: the new units), the buckets' in the kernel
        (``group_plan.global_norm_factor``)."""
        positions = self.flat.positions(group_plan.group,
                                        self.settings.params_of(group_plan.group))
        found = {}  # dtype class -> ([positions arrays], [squared norms tensors])

        def add(kind, where, norms):
            entry = found.setdefault(kind, ([], []))
            entry[0].append(where)
            entry[1].append(norms)

        for bucket, table in group_plan.buckets:
            if _norm_bucket(bucket):
                norms = implementations.squared_norms(group_plan.can.ops, bucket.key[0],
                                                      table)
                norms = _clip.fix_large_nan_norms(norms, bucket.key[0], bucket.params,
                                                  bucket.sizes)
                where, clipped = bucket.positions(positions), bucket.clipped()
                if not clipped.any():
                    continue
                if not clipped.all():  # members with need_clip False take no part
                    norms = paddle.gather(norms, paddle.to_tensor(np.flatnonzero(clipped)))
                    where = where[clipped]
                add(bucket.key[0], where, norms)
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
        # (nothing to clip, every need_clip False: the built-in computes no factor either)
        factor = _clip.global_norm_factor(group_plan.settings.grad_clip, sums) if sums else None
        group_plan.global_norm_factor = factor
        scaled = _clip.scale_gradients([(p, g) for p, g, _ in group_plan.units], factor)
        return [(p, g, s) for (p, g), (_, _, s) in zip(scaled, group_plan.units)]

    def _repeated_params(self):
        """The ids of parameters listed more than once (in one group or across groups): the
        built-in updates them once per listing, so they stay single-parameter units."""
        seen, repeated = set(), set()
        for _, params in self.settings.groups():
            for param in params:
                (repeated if id(param) in seen else seen).add(id(param))
        return repeated

    def _build_buckets(self, group_plan: GroupPlan, repeated):
        """Put the group's eligible parameters (not in ``repeated``) into flat buckets, one
        per batch key (once per group, and again whenever something they were built from
        changes); the buckets join ``group_plan.buckets``, the rest stay units."""
        members, rest = {}, []
        state = self.state
        for param, grad, settings in group_plan.units:
            key = _dispatch.bucket_key(self.kernel, group_plan.can, param, settings, grad,
                                       repeated=id(param) in repeated)
            if key is None:
                rest.append((param, grad, settings))
            else:
                members.setdefault(key, []).append((param, grad, settings))
        buckets = []
        for key, entries in members.items():
            bucket = _flat.FlatBucket(
                key, [p for p, _, _ in entries], _kernel.gradient_table(), state.velocity_of,
                [s.lr_scale for _, _, s in entries],
                [getattr(p, "need_clip", True) for p, _, _ in entries],
                [s.regularizer for _, _, s in entries],
                state.create_master_weight if entries[0][2].master_weight else None,
                state.zero_velocities)
            buckets.append(bucket)
            grads = bucket.gradients(state.velocities(), state.masters)
            mixed = (group_plan.settings.value("dampening")
                     and state.mixed_first_steps(bucket.params))
            if isinstance(grads, str) or mixed:  # not whole this step: members stay units
                rest.extend(entries)
            else:
                group_plan.buckets.append((bucket, grads))
        in_bucket = {id(p) for bucket in buckets for p in bucket.params}
        params = self.settings.params_of(group_plan.group)
        outside = [p for p in params if id(p) not in in_bucket]
        self.flat.add_group(group_plan.group, params, group_plan.settings.structure(), buckets,
                            outside, state.masters)
        group_plan.units = rest

    def _update_bucket(self, bucket, table, group_plan: GroupPlan, lr):
        """One fused call updates every member of ``bucket`` (its filled gradient ``table``
        holds each member's learning-rate scale and clip flag)."""
        settings = self.settings.param(bucket.params[0], group_plan.settings)
        factor = None
        if group_plan.global_norm_factor is not None and _norm_bucket(bucket):
            factor = group_plan.global_norm_factor.astype(settings.dtype).item()
        gradient_ops = _gradient_ops_now(_clip_kind(bucket), bucket.key[-1],
                                         group_plan.settings.grad_clip, factor)
        first_step = not bucket.stepped and self.state.first_steps(bucket.params)
        bucket.stepped = True
        implementations.fused_table(group_plan.can.ops, settings.dtype, table,
                                    bucket.velocity_buffers,
                                    bucket.master_buffers, lr, gradient_ops=gradient_ops,
                                    first_step=first_step, **settings.rule_options())


def gradient_pairs(params, use_main_grad, only=None):
    """``[(param, grad)]`` for the trainable ``params`` (in ``only``) with a gradient
    (``main_grad`` where it is set, with ``use_main_grad``)."""
    grads = [None if p.stop_gradient or (only is not None and id(p) not in only)
             else _compat.gradient_of(p, use_main_grad) for p in params]
    return [(p, g) for p, g in zip(params, grads) if g is not None]


def param_lr(lr, settings: ParamSettings):
    """A parameter's learning rate in dygraph: the global ``lr`` times its scale (a tensor op,
    as the built-in's); a Tensor scale is taken as the learning rate itself, as the
    built-in does."""
    if _compat.is_tensor(settings.lr_scale):
        return settings.lr_scale
    return lr if settings.lr_scale == 1.0 else lr * settings.lr_scale


def _regularized(param, grad, settings: ParamSettings):
    """The gradient plus any non-fused regularization term (built-in: ``add_n``); Paddle's own
    ``L1Decay`` is ``rule.l1_decay`` (its ops, op for op; the fused kernel runs it generated)."""
    if settings.regularizer is None:
        return grad
    if type(settings.regularizer) is L1Decay:
        return rule.l1_decay(param, grad, settings.regularizer._coeff)
    term = settings.regularizer(param, grad, _compat.default_block(grad))
    return paddle.add_n([grad, term])


def _gradient_ops_now(clip_kind, l1, clip, global_factor) -> GradientOps:
    """A bucket's gradient ops for this step: the values of ``clip`` (the group's clip object
    now) for a clip of ``clip_kind``, the global norm's ``global_factor`` (None: the clip
    skipped this step), and the L1 coefficient."""
    if clip_kind == VALUE_CLIP:
        return GradientOps(clip_min=float(clip.min), clip_max=float(clip.max), l1=l1)
    if clip_kind == NORM_CLIP:
        return GradientOps(max_norm=float(clip.clip_norm), l1=l1)
    if clip_kind == GLOBAL_NORM_CLIP:
        return GradientOps(scale=global_factor, l1=l1)
    return GradientOps(l1=l1)


def _fusable_clip_values(clip) -> bool:
    """The clip's values are plain numbers the kernel takes as doubles (a clip set by value
    may hold anything after construction: None, a Tensor, ...)."""
    return type(clip) is not ClipGradByValue or _clip.rule_clip_bounds(clip) is not None


def _clip_kind(bucket):
    """The kind of clip the bucket's kernel call does (``_settings.fused_gradient_ops``)."""
    return bucket.key[-2]


def _norm_bucket(bucket) -> bool:
    """The bucket's members take part in their group's global-norm clip."""
    return _clip_kind(bucket) == GLOBAL_NORM_CLIP
