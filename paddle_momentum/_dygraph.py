"""The dygraph step as a plan: per group, the flat buckets' calls and the units.

A step first makes a plan, per group: the group's settings, derived now
(``_settings.group_settings``); its flat buckets, each with its gradient table filled for this
step (which checked the bucket's memory and wrote each member's values: see ``_flat``), built
again only where their memory changed; and every other parameter with a gradient (outside the
buckets, or a member a bucket's call does not update this step) as a single-parameter unit
with its settings derived now. Then, in the built-in's order: checks (which raise before
anything is written, every step: the units' gradients and state, a norm clip's ``clip_norm``)
-> clip -> non-fused regularization -> state -> ``found_inf`` -> updates. What updates a unit
is ``_dispatch.choose``'s decision, and which members a bucket's call updates is the
bucket's (from ``_dispatch``'s rules); the executors run what they are given.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import paddle
from paddle.regularizer import L1Decay

from . import _clip, _compat, _dispatch, _flat, _kernel, implementations, rule
from ._boundary import NO_GRADIENT_OPS, GradientOps, kernel_attributes
from ._settings import (GLOBAL_NORM_CLIP, NORM_CLIP, VALUE_CLIP, GroupSettings,
                        ParamSettings, clip_kind)


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
    (``_reading.Reader``), the state (``_state.State``), the flat buckets
    (``_flat.FlatState``), the ``kernel`` option; the optimizer prepares the learning rate
    between :meth:`prepare` and :meth:`update`, as the built-in's step does."""

    def __init__(self, settings, state, flat, kernel, rule):
        self.settings = settings
        self.state = state
        self.flat = flat
        self.kernel = kernel
        self.rule = rule
        self._group_attributes = {}  # id(group) -> (its GroupSettings, their attributes)

    def plan(self, only=None, use_main_grad=True):
        """The step's :class:`GroupPlan` per group; ``only`` (a set of ids) restricts it to
        those parameters (``minimize(parameters=...)``). The built-in's ``step()`` takes
        ``main_grad`` where it is set (not in groups), its ``minimize()`` never."""
        plan = []
        can = _dispatch.capabilities(self.rule, self.kernel)
        settings_of = self.settings.param
        for group, params in self.settings.groups():
            group_settings = self.settings.group(group)
            main_grad = use_main_grad and group is None
            if _dispatch.buckets_possible(self.kernel, can):
                buckets, pairs = self._bucket_plan(group, params, group_settings, can, only,
                                                   main_grad)
            else:
                buckets, pairs = [], gradient_pairs(params, main_grad, only)
            units = [(param, grad, settings_of(param, group_settings)) for param, grad in pairs]
            plan.append(GroupPlan(group, group_settings, buckets, units, can))
        return plan

    def _bucket_plan(self, group, params, group_settings, can, only, use_main_grad):
        """``([(bucket, its filled table)], [(param, grad)] of the parameters with a gradient
        that no bucket's call updates this step)`` for ``group``, its buckets built (again)
        where their memory changed."""
        state = self.state
        flat_group = self.flat.groups.get(id(group))
        for _ in range(2):
            outside = None
            if flat_group is not None and flat_group.current(
                    params, group_settings.multi_precision, state.masters):
                outside = ([] if only is None and flat_group.outside_without_gradient()
                           else gradient_pairs(flat_group.outside, use_main_grad, only))
                if flat_group.waiting and any(id(p) in flat_group.waiting for p, _ in outside):
                    outside = None  # (one that had no gradient can join a bucket now)
            if outside is None:
                flat_group = self._build(group, params, group_settings, can, use_main_grad,
                                         only)
                outside = gradient_pairs(flat_group.outside, use_main_grad, only)
            ready = []
            for bucket in flat_group.buckets:
                table = bucket.ready(can, group_settings,
                                     lambda param: self.settings.param(param, group_settings),
                                     state, only)
                if table is None:  # its memory changed
                    flat_group = None
                    break
                ready.append((bucket, table))
            else:
                excluded = gradient_pairs([p for bucket in flat_group.buckets
                                           for p in bucket.units()], use_main_grad, only)
                if excluded:  # (in the group's order: a global-norm clip sums in it)
                    positions = flat_group.positions
                    outside = sorted(outside + excluded, key=lambda pair: positions[id(pair[0])][0])
                return [(b, table) for b, table in ready if b.updates], outside
        self.flat.groups.pop(id(group), None)  # (moved again at once: no buckets this step)
        return [], gradient_pairs(params, use_main_grad, only)

    def _build(self, group, params, group_settings, can, use_main_grad, only):
        """Put the group's parameters that can live in a bucket (``_dispatch.bucket_member``)
        and have a gradient now into flat buckets, one per memory layout; returns the
        group's ``_flat.FlatGroup``."""
        repeated = self._repeated_params()
        members, outside, waiting = {}, [], []
        for param in params:
            # (minimize's list: a parameter outside it that has no state yet gets none)
            outside_only = (only is not None and id(param) not in only
                            and not self.state.has_state(param))
            grad = (None if param.stop_gradient or outside_only
                    else _compat.gradient_of(param, use_main_grad))
            if grad is None:
                outside.append(param)
                if id(param) not in repeated:
                    waiting.append(param)
                continue
            settings = self.settings.param(param, group_settings)
            if (not _dispatch.bucket_member(param, grad, settings, id(param) in repeated)
                    or not self.state.fits(param, settings)):
                outside.append(param)
                continue
            members.setdefault((settings.dtype, settings.master_weight), []).append(
                (param, settings))
        buckets = [_flat.FlatBucket([p for p, _ in entries], [s for _, s in entries],
                                    _kernel.gradient_table(), self.state)
                   for entries in members.values()]
        flat_group = _flat.FlatGroup(params, group_settings.multi_precision, self.state.masters,
                                     buckets, outside, waiting, _kernel.gradient_table())
        self.flat.groups[id(group)] = flat_group
        return flat_group

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
            clip = group_plan.settings.grad_clip
            kind = clip_kind(clip)
            # what Paddle's clip ops check of the clip's values, every step, before anything
            # is written (the units' clip runs Paddle's own ops)
            clipped_in_call = kind is not None and any(
                bucket.clipped_updated().any() for bucket, _ in group_plan.buckets)
            if clipped_in_call and kind == NORM_CLIP:
                _clip.check_clip_norm(clip)
            if clipped_in_call and kind == VALUE_CLIP:
                _clip.check_clip_bounds(clip)
            if clipped_in_call and kind == GLOBAL_NORM_CLIP:
                units = self._clip_by_global_norm(group_plan)
            elif units and clip is not None:
                clipped = _clip.clip_gradients(clip, [(p, g) for p, g, _ in units])
                units = [(p, g, s) for (p, g), (_, _, s) in zip(clipped, units)]
            group_plan.units = [(p, _regularized(p, g, s), s) for p, g, s in units]

    def update(self, plan, lr, found_inf):
        """The second half: the state (velocities created, the buckets' moved into their
        buffers), then, unless
        ``found_inf`` (a GradScaler flagged inf/NaN gradients: nothing changes), every
        bucket's and unit's update with the global learning rate ``lr``."""
        for group_plan in plan:
            for bucket, _ in group_plan.buckets:
                bucket.make_state(self.state)
            for param, _, _ in group_plan.units:
                self.state.velocity_of(param)
        if found_inf():
            for group_plan in plan:  # the built-in clipped the gradients all the same
                if clip_kind(group_plan.settings.grad_clip) != GLOBAL_NORM_CLIP:
                    continue
                for bucket, _ in group_plan.buckets:
                    params = [bucket.params[i] for i in np.flatnonzero(bucket.clipped_updated())]
                    _clip.scale_gradients(zip(params, _compat.all_gradients(params)),
                                          group_plan.global_norm_factor)
            return
        for group_plan in plan:
            for bucket, table in group_plan.buckets:
                self._update_bucket(bucket, table, group_plan, lr)
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
        positions = self.flat.groups[id(group_plan.group)].positions
        found = {}  # dtype class -> ([positions arrays], [squared norms tensors])

        def add(kind, where, norms):
            entry = found.setdefault(kind, ([], []))
            entry[0].append(where)
            entry[1].append(norms)

        for bucket, table in group_plan.buckets:
            clipped = bucket.clipped_updated()
            if not clipped.any():
                continue
            norms = implementations.squared_norms(group_plan.can.ops, bucket.dtype, table)
            norms = _clip.fix_large_nan_norms(norms, bucket.dtype, bucket.params, bucket.sizes)
            where = bucket.positions(positions)
            if not clipped.all():  # (members with need_clip False, or not updated, take no part)
                norms = paddle.gather(norms, paddle.to_tensor(np.flatnonzero(clipped)))
                where = where[clipped]
            add(bucket.dtype, where, norms)
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

    def _kernel_attributes(self, group_plan: GroupPlan, gradient_ops: GradientOps) -> dict:
        """The kernel's attributes for a bucket of ``group_plan``'s group: its settings' (made
        again when the group's ``GroupSettings`` is another object, i.e. a value changed)
        with this step's ``gradient_ops``."""
        kept = self._group_attributes.get(id(group_plan.group))
        if kept is None or kept[0] is not group_plan.settings:
            kept = (group_plan.settings, kernel_attributes(group_plan.settings.rule_options()))
            self._group_attributes[id(group_plan.group)] = kept
        if gradient_ops == NO_GRADIENT_OPS:  # (its attributes are in them already)
            return kept[1]
        return {**kept[1], **gradient_ops.attributes()}

    def _update_bucket(self, bucket, table, group_plan: GroupPlan, lr):
        """One fused call updates the members of ``bucket`` its filled gradient ``table``
        says (with each one's learning-rate scale, clip flag, decay and first step)."""
        clip = group_plan.settings.grad_clip
        kind = clip_kind(clip)
        factor = None
        if group_plan.global_norm_factor is not None and kind == GLOBAL_NORM_CLIP:
            factor = group_plan.global_norm_factor.astype(bucket.dtype).item()
        implementations.table_call(group_plan.can.ops, bucket.dtype, table,
                                   bucket.velocity_buffers, bucket.master_buffers, lr,
                                   self._kernel_attributes(group_plan, _gradient_ops_now(
                                       kind, clip, factor)))
        bucket.first_steps_taken(self.state)


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


def _gradient_ops_now(kind, clip, global_factor) -> GradientOps:
    """A bucket's clip for this step: the values of ``clip`` (the group's clip object now,
    of ``kind``: ``_settings.clip_kind``) and the global norm's ``global_factor`` (None: the
    clip skipped this step). (The decay is each member's, in its row.)"""
    if kind == VALUE_CLIP:
        return GradientOps(clip_min=float(clip.min), clip_max=float(clip.max))
    if kind == NORM_CLIP:
        return GradientOps(max_norm=float(clip.clip_norm))
    if kind == GLOBAL_NORM_CLIP:
        return GradientOps(scale=global_factor)
    return GradientOps()
