"""``paddle_momentum.Momentum``: state, parameter groups, schedules and modes around the rule."""

from __future__ import annotations

import functools
import warnings

import paddle
from paddle.base import framework
from paddle.base.dygraph import base as imperative_base
from paddle.base.layer_helper import LayerHelper
from paddle.optimizer import Optimizer
from paddle.optimizer.lr import LRScheduler
from paddle.regularizer import L2Decay

from . import _clip, _compat, _flat, _kernel, implementations
from . import _validation as check

_VELOCITY = "velocity"
KERNELS = ("auto", "fused", "composed")

LOW_PRECISION_WARNING = (
    "Accumulating with FP16/BF16 in optimizer can lead to poor accuracy or slow convergence."
    "Consider using multi_precision=True option of the Momentum optimizer."
)


# A static program updates a batch of fewer parameters with one op each: under PIR a multi op
# brings three builtin.combine and two builtin.split ops (784-200-10 MLP, 4 parameters, 300
# steps: 1.01-1.02x the built-in's Executor step batched, 1.00x per parameter).
STATIC_BATCH_MIN = 7


def split_weight_decay(decay):
    """``(fused L2 coefficient or None, other regularizer or None)`` for one decay setting.

    A float or an ``L2Decay`` is fused into the update (coefficient rounded to float32 there);
    any other regularizer (``L1Decay``, custom) is applied to the gradient beforehand.
    """
    if decay is None:
        return None, None
    if isinstance(decay, float):
        return decay, None
    if isinstance(decay, L2Decay):
        return decay._coeff, None
    return None, decay


class Momentum(Optimizer):
    r"""Stochastic gradient descent with momentum, a drop-in for ``paddle.optimizer.Momentum``.

    For each parameter :math:`p` with gradient :math:`g`, velocity :math:`v`, learning rate
    :math:`\eta` (times the parameter's learning-rate scale), momentum :math:`\mu`, fused L2
    coefficient :math:`c` and ``rescale_grad`` :math:`s`, after gradient clipping and any
    non-L2 regularizer (added to :math:`g`):

    .. math::

        g' &= p \cdot c + s \cdot g \\
        v  &\leftarrow v \cdot \mu + g' \\
        p  &\leftarrow p - \eta \cdot v                      && \text{(plain)} \\
        p  &\leftarrow p - (g' + v \cdot \mu) \cdot \eta      && \text{(use_nesterov)}

    The arithmetic is :func:`paddle_momentum.momentum_update`; this class only manages the
    learning rate, parameter groups, clipping, regularization, velocities, master weights and
    the state dict, with the built-in's names so checkpoints load both ways.

    Arguments are those of ``paddle.optimizer.Momentum`` (PaddlePaddle 3.3.1), validated here
    at construction, plus keyword-only ``kernel`` ('auto', 'fused', 'composed') and the
    ``torch.optim.SGD`` options ``dampening``, ``maximize`` and ``decoupled_weight_decay``
    (SGDW), which default to Paddle's behaviour (see :func:`paddle_momentum.momentum_update`).
    Deliberate differences from the built-in are listed in ``docs/differences.md``:
    ``learning_rate`` may be a 0-d float Tensor, ``rescale_grad`` is applied, float16/bfloat16
    parameters train on CPU, ``minimize`` works with parameter groups, and the user's group
    dicts are never modified.
    """

    _velocity_acc_str = _VELOCITY

    def __init__(
        self,
        learning_rate=0.001,
        momentum=0.9,
        parameters=None,
        use_nesterov=False,
        weight_decay=None,
        grad_clip=None,
        multi_precision=False,
        rescale_grad=1.0,
        use_multi_tensor=False,
        name=None,
        *,
        kernel="auto",
        dampening=0.0,
        maximize=False,
        decoupled_weight_decay=0.0,
    ):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self._torch_options = check.check_torch_options(dampening, maximize,
                                                        decoupled_weight_decay)
        learning_rate = check.check_learning_rate(learning_rate)
        momentum = check.check_momentum(momentum)
        weight_decay = check.check_weight_decay(weight_decay)
        grad_clip = check.check_grad_clip(grad_clip)
        rescale_grad = check.check_rescale_grad(rescale_grad)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be None or a str, got {name!r}")

        # Read by _add_param_group, which the base constructor calls for every group.
        self._group_defaults = {
            "learning_rate": 1.0,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "use_nesterov": bool(use_nesterov),
            "rescale_grad": rescale_grad,
            "grad_clip": grad_clip,
        }
        parameters = self._checked_parameters(parameters)

        self._learning_rate_tensor = learning_rate if _compat.is_tensor(learning_rate) else None
        fused_l2, other_decay = split_weight_decay(weight_decay)
        super().__init__(
            learning_rate=float(learning_rate) if self._learning_rate_tensor is not None
            else learning_rate,
            parameters=parameters,
            weight_decay=other_decay,
            grad_clip=grad_clip,
            name=name,
        )
        self.type = "momentum"
        self._default_dict = self._group_defaults
        self._weight_decay = weight_decay
        self._optimizer_decay_route = (fused_l2, other_decay)
        self._momentum = momentum
        self._use_nesterov = bool(use_nesterov)
        self._rescale_grad = rescale_grad
        self._multi_precision = bool(multi_precision)
        # Accepted for compatibility: results are the same either way, the fused kernel's flat
        # buckets already update many parameters per call, and the base class's multi-tensor
        # hooks (which call Paddle's merged_momentum) stay off.
        self._multi_tensor_requested = bool(use_multi_tensor)
        self._master_weights = {}
        self._kernel = kernel
        self._flat = _flat.FlatState()
        self._static_batches = {}
        if kernel == "fused":
            if _kernel.load() is None:
                raise RuntimeError("kernel='fused' was requested but the fused kernel could not "
                                   "be built (see the warning above); use kernel='auto' to "
                                   "fall back")
            _kernel.gradient_table()  # built and checked now, not inside the first step

    # ------------------------------------------------------------------ construction helpers
    def _checked_parameters(self, parameters):
        """The parameter list, or normalized copies of the group dicts (the user's stay as given)."""
        if parameters is None:
            if _compat.in_dygraph():
                raise AttributeError(
                    "parameters argument given to the Optimizer should not be None in dygraph mode."
                )
            return None
        if _compat.is_tensor(parameters):
            raise TypeError(
                "`parameters` argument given to the optimizer should be an iterable of paddle "
                f"Tensors, but got argument type is `{type(parameters)}`."
            )
        if isinstance(parameters, dict):
            raise TypeError(
                "`parameters` argument should not get dict type, if parameter groups is needed, "
                "please set `parameters` as list of dict"
            )
        parameters = list(parameters)
        if not parameters:
            raise check.ParametersIndexError("parameters is empty: give at least one parameter")
        if any(isinstance(entry, dict) for entry in parameters):
            groups = [self._normalized_group(group, i) for i, group in enumerate(parameters)]
            check.check_unique([p for group in groups for p in group["params"]])
            if not groups[0]["params"]:
                raise check.ParametersIndexError("parameters[0]['params'] is empty")
            return groups
        parameters = check.check_parameter_list(parameters, "parameters")
        check.check_unique(parameters)
        return parameters

    def _normalized_group(self, group, index):
        where = f"parameters[{index}]"
        if not isinstance(group, dict):
            raise check.GroupTypeError(
                f"{where} must be a dict when parameter groups are used, got {type(group)}"
            )
        if "params" not in group:
            raise check.GroupAssertionError(
                "params should be set in parameters if parameter groups are optimized in "
                f"different options ({where} has keys {sorted(group)})"
            )
        unknown = sorted(set(group) - set(check.GROUP_KEYS))
        if unknown:
            raise ValueError(
                f"{where} has unknown keys {unknown}; allowed: {list(check.GROUP_KEYS)}"
            )
        defaults = self._group_defaults
        normalized = {"params": check.check_parameter_list(group["params"], f"{where}['params']")}
        validators = {
            "learning_rate": check.check_lr_scale,
            "weight_decay": check.check_weight_decay,
            "momentum": check.check_momentum,
            "use_nesterov": check.check_bool,
            "rescale_grad": check.check_rescale_grad,
            "grad_clip": check.check_grad_clip,
        }
        for key, validate in validators.items():
            normalized[key] = (
                validate(group[key], f"{where}['{key}']") if key in group else defaults[key]
            )
        return normalized

    def _add_param_group(self, param_group):
        """Add a group without touching the caller's dict or the parameters' attributes."""
        group = self._normalized_group(param_group, len(self._param_groups))
        check.check_unique(
            [p for existing in self._param_groups for p in existing["params"]] + group["params"]
        )
        self._param_groups.append(group)

    # ------------------------------------------------------------------ per-parameter settings
    def _grouped(self) -> bool:
        return bool(self._param_groups) and isinstance(self._param_groups[0], dict)

    def _decay_route(self, param, group):
        """``(fused L2 coefficient, other regularizer)`` for ``param``, as the built-in routes it.

        Without groups the parameter's own regularizer (``ParamAttr``) wins over the
        optimizer's. A group's ``weight_decay`` replaces the parameter's own regularizer; an
        optimizer-level non-L2 regularizer still applies beside a group's L2 coefficient.
        """
        if group is not None:
            fused, other = split_weight_decay(group["weight_decay"])
            return fused, other if other is not None else self._optimizer_decay_route[1]
        own = getattr(param, "regularizer", None)
        if own is not None:
            return split_weight_decay(own)
        return self._optimizer_decay_route

    def _uses_master_weight(self, param) -> bool:
        return self._multi_precision and _compat.is_low_precision(param.dtype)

    @staticmethod
    def _lr_scale(param, group):
        """``param``'s learning-rate scale: its group's, else its ``ParamAttr``'s."""
        if group is not None:
            return group["learning_rate"]
        return (getattr(param, "optimize_attr", None) or {}).get("learning_rate", 1.0)

    def _param_lr(self, param, group):
        """The learning rate tensor for ``param``: global lr times its scale (a tensor op)."""
        if group is None:  # the base class applies the ParamAttr scale (with static guards)
            return self._create_param_lr((param, None))
        scale = self._lr_scale(param, group)
        lr = self._global_learning_rate()
        return lr if scale == 1.0 else lr * scale

    @staticmethod
    def _rule_options(settings, l2_coeff):
        """The keyword arguments every implementation takes, from a group's settings."""
        return dict(momentum=settings["momentum"], use_nesterov=settings["use_nesterov"],
                    l2_coeff=l2_coeff, rescale_grad=settings["rescale_grad"])

    # ------------------------------------------------------------------ state
    def _create_accumulators(self, block, parameters):
        for param in parameters:
            self._velocity_of(param)

    def _velocity_of(self, param):
        """``param``'s velocity, created on first use (zeros, or what a state dict loaded
        before the first step holds); it follows the master weight where there is one."""
        if param.name not in self._already_create_accumulator:
            if self._uses_master_weight(param):
                target = self._create_master_weight(param)
            else:
                if _compat.is_low_precision(param.dtype):
                    warnings.warn(LOW_PRECISION_WARNING)
                target = param
            self._add_accumulator(self._velocity_acc_str, target)
            self._already_create_accumulator.add(param.name)
        return self._get_accumulator_master(self._velocity_acc_str, param)

    def _prepare_learning_rate(self):
        self._create_global_learning_rate()
        if self._learning_rate_tensor is not None:
            lr = self._global_learning_rate()
            value = _compat.cast(self._learning_rate_tensor.reshape([]), lr.dtype)
            _compat.write_into(lr, value)

    # ------------------------------------------------------------------ the update
    def _update_param(self, param, grad, group):
        """Apply the rule to one parameter and write param, velocity and master weight back."""
        settings = group if group is not None else self._group_defaults
        fused_l2, _ = self._decay_route(param, group)
        lr = self._param_lr(param, group)
        velocity = self._get_accumulator_master(self._velocity_acc_str, param)
        master = self._master_weights[param.name] if self._uses_master_weight(param) else None
        if _compat.is_sparse(grad):
            # The built-in's sparse kernel = the dense update on the merged rows, zeros
            # elsewhere (so absent rows still decay), rescale_grad applied.
            grad = _compat.dense_gradient(grad, param)
        self._implementation_for(param, grad)(param, grad, velocity, master, lr,
                                              **self._rule_options(settings, fused_l2))

    def _fused_chosen(self) -> bool:
        """The fused kernel is wanted (kernel option, no torch option) and built."""
        return (self._kernel != "composed" and not self._torch_options
                and _kernel.load() is not None)

    def _fused_active(self) -> bool:
        """Flat buckets are in use: the fused kernel is chosen and we are in dygraph."""
        return _compat.in_dygraph() and self._fused_chosen()

    def _bucket_key(self, param, grad, group):
        """Update settings shared by a bucket, or None when ``param`` cannot join one."""
        clip = group["grad_clip"] if group is not None else self._grad_clip
        fused_l2, other_decay = self._decay_route(param, group)
        if (clip is not None or other_decay is not None or param.size == 0
                or getattr(param, "main_grad", None) is not None
                or not param._is_initialized() or _compat.is_sparse(grad)
                or not implementations.fused_supports(param, grad)):
            return None
        return (_compat.dtype_name(param.dtype), self._uses_master_weight(param), fused_l2,
                self._lr_scale(param, group))

    def _build_buckets(self, group, pairs):
        """Put ``group``'s eligible parameters into flat buckets, one per update setting (once
        per group); returns ``([(new bucket, its gradients)], pairs left to update one by
        one)``."""
        members, rest = {}, []
        for param, grad in pairs:
            key = self._bucket_key(param, grad, group)
            if key is None:
                rest.append((param, grad))
            else:
                members.setdefault(key, []).append((param, grad))
        buckets, whole = [], []
        for key, entries in members.items():
            bucket = _flat.FlatBucket(
                key, [p for p, _ in entries], self._velocity_of,
                self._create_master_weight if key[1] else None)
            buckets.append(bucket)
            grads = bucket.gradients()
            if grads is None:
                rest.extend(entries)
            else:
                whole.append((bucket, grads))
        in_bucket = {id(p) for bucket in buckets for p in bucket.params}
        outside = [p for p in self._params_of(group) if id(p) not in in_bucket]
        self._flat.add_group(group, buckets, outside, self._master_weights)
        return whole, rest

    def _update_bucket(self, bucket, grads, group):
        """One fused call updates every member of ``bucket``."""
        settings = group if group is not None else self._group_defaults
        update, params = ((implementations.fused_table, bucket.key[0])
                          if bucket.table is not None
                          else (implementations.fused_multi, bucket.param_buffers))
        update(params, grads, bucket.velocity_buffers, bucket.master_buffers,
               self._param_lr(bucket.params[0], group),
               **self._rule_options(settings, bucket.key[2]))

    def _implementation_for(self, param, grad):
        """The fused kernel where it is chosen, built and applicable; else composed ops (which
        alone implement the torch.optim.SGD options)."""
        if implementations.fused_supports(param, grad) and self._fused_chosen():
            return implementations.fused
        if self._torch_options:
            return functools.partial(implementations.composed, **self._torch_options)
        return implementations.composed

    def _regularized(self, param, grad, group):
        """The gradient plus any non-fused regularization term (built-in: ``add_n``)."""
        _, other = self._decay_route(param, group)
        if other is None:
            return grad
        term = other(param, grad, _compat.default_block(grad))
        return paddle.add_n([grad, term])

    def _check_gradients(self, grouped_pairs):
        for _, pairs in grouped_pairs:
            for param, grad in pairs:
                if not _compat.is_float_dtype(grad.dtype):
                    raise TypeError(
                        f"the gradient of {param.name} must be a float tensor, got {grad.dtype}"
                    )
                if not _compat.is_sparse(grad) and grad.shape != param.shape:
                    raise ValueError(
                        f"the gradient of {param.name} has shape {list(grad.shape)}, "
                        f"expected {list(param.shape)}"
                    )

    def _found_inf(self) -> bool:
        """True when a GradScaler flagged inf/NaN gradients: then the step changes nothing."""
        found_inf = self._get_auxiliary_var("found_inf")
        if _compat.is_tensor(found_inf):
            found_inf = bool(found_inf)
            self._set_auxiliary_var("found_inf", found_inf)
        return bool(found_inf)

    def _plan(self, only=None):
        """Per group ``[group, [(bucket, its gradients)], [(param, grad), ...]]``.

        Members of a bucket that can be updated whole (see ``_flat``) skip all per-parameter
        work: their group has no clip and no non-fused regularizer. Everything else is a
        (param, grad) pair for the usual path.
        """
        plan = []
        for group, params in self._group_params():
            whole = []
            if self._fused_active() and only is None and self._flat.built(group):
                state = self._flat.ready(group, self._master_weights)
                if state is None:  # storage replaced: rebuild every bucket at this step
                    self._flat.clear()
                    return self._plan(only)
                whole, by_member = state
                if not by_member:
                    params = self._flat.outside_buckets[id(group)]
                elif whole:
                    members = {id(p) for bucket, _ in whole for p in bucket.params}
                    params = [p for p in params if id(p) not in members]
            plan.append([group, whole, self._gradient_pairs(params, only)])
        return plan

    def _group_params(self):
        """``[(group or None, its parameters)]``."""
        groups = self._param_groups if self._grouped() else [None]
        return [(group, self._params_of(group)) for group in groups]

    def _params_of(self, group):
        return group["params"] if group is not None else self._param_groups

    @staticmethod
    def _gradient_pairs(params, only=None):
        """``[(param, grad)]`` for the trainable ``params`` (in ``only``) with a gradient."""
        grads = [None if p.stop_gradient or (only is not None and id(p) not in only)
                 else _compat.gradient_of(p) for p in params]
        return [(p, g) for p, g in zip(params, grads) if g is not None]

    def _optimize(self, plan):
        """The step, in the built-in's order: clip -> regularize -> state -> found_inf -> update.

        Everything that can fail on bad input runs before the first parameter is written.
        """
        self._check_gradients([(entry[0], entry[2]) for entry in plan])
        for entry in plan:
            group, pairs = entry[0], entry[2]
            clip = group["grad_clip"] if group is not None else self._grad_clip
            if pairs:
                pairs = _clip.clip_gradients(clip, pairs)
            entry[2] = [(p, self._regularized(p, g, group)) for p, g in pairs]
        with paddle.static.program_guard(
            paddle.static.default_main_program(), paddle.static.default_startup_program()
        ):
            self.helper = LayerHelper(self.__class__.__name__)
            self._prepare_learning_rate()
            block = framework.default_main_program().global_block()
            for entry in plan:
                group, _, pairs = entry
                if self._fused_active() and not self._flat.built(group):
                    # Bucket members' state is created inside the buckets' buffers.
                    entry[1], entry[2] = self._build_buckets(group, pairs)
                self._create_accumulators(block, [p for p, _ in entry[2]])
            if self._found_inf():
                return
            for group, whole, pairs in plan:
                for bucket, grads in whole:
                    self._update_bucket(bucket, grads, group)
                for param, grad in pairs:
                    if param._is_initialized():  # the built-in skips these too (e.g. empty)
                        self._update_param(param, grad, group)

    # ------------------------------------------------------------------ public API
    @imperative_base.no_grad()
    @framework.non_static_only
    def step(self) -> None:
        """Update every trainable parameter that has a gradient, once."""
        if _compat.in_to_static():
            self._declarative_step()
            return
        self._optimize(self._plan())

    @imperative_base.no_grad()
    def minimize(self, loss, startup_program=None, parameters=None, no_grad_set=None):
        """Dygraph: ``step()`` restricted to ``parameters`` minus ``no_grad_set``; returns
        ``([], params_grads)`` like the built-in (and also works with parameter groups).

        Static graph: appends backward, clip, regularization and our update ops to the
        program and returns ``(optimize_ops, params_grads)``.
        """
        if not _compat.in_dygraph():
            if self._grouped():
                raise TypeError(
                    "parameter groups are supported in dygraph mode only; in a static program "
                    "pass a list of parameters (the built-in fails here too)"
                )
            return super().minimize(loss, startup_program, parameters, no_grad_set)
        only = None
        if parameters or no_grad_set:
            only = {id(p) for p in (parameters or [p for _, ps in self._group_params()
                                                   for p in ps])}
            only -= {id(p) for p in (no_grad_set or ())}
        params_grads = [pair for _, params in self._group_params()
                        for pair in self._gradient_pairs(params, only)]
        self._optimize(self._plan(only))
        return [], params_grads

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
        if self._grad_clip is not None:
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
        if self._implementation_for(param, grad) is implementations.fused \
                and not self._uses_master_weight(param):
            key = (self._decay_route(param, None)[0], self._lr_scale(param, None))
            self._static_batches.setdefault(key, []).append((param, grad))
            return
        self._update_param(param, grad, group=None)

    def _finish_update(self, block, parameters_and_grads):
        """Static graph: one fused multi-tensor op per batch collected above, or one op per
        parameter for a batch too small to repay the list ops a multi op needs."""
        batches, self._static_batches = self._static_batches, {}
        for (l2_coeff, _), pairs in batches.items():
            if len(pairs) < STATIC_BATCH_MIN:
                for param, grad in pairs:
                    self._update_param(param, grad, group=None)
                continue
            params = [p for p, _ in pairs]
            with _compat.optimizer_ops_guard(pairs):
                implementations.fused_multi(
                    params, [g for _, g in pairs],
                    [self._get_accumulator_master(self._velocity_acc_str, p) for p in params],
                    None, self._param_lr(params[0], None),
                    **self._rule_options(self._group_defaults, l2_coeff))

    def _create_regularization_of_grad(self, param, grad, regularization=None):
        # An L2Decay set through ParamAttr is fused into the update, not added here.
        if isinstance(getattr(param, "regularizer", None), L2Decay):
            return grad
        return super()._create_regularization_of_grad(param, grad, regularization)

    @framework.dygraph_only
    def set_state_dict(self, state_dict) -> None:
        """Load a state dict (ours or the built-in's): every entry is checked before anything
        changes, so a bad dict leaves velocities, master weights and the schedule as they were."""
        self._check_state_dict(state_dict)
        super().set_state_dict(state_dict)

    load_state_dict = set_state_dict

    def _check_state_dict(self, state_dict):
        if not isinstance(state_dict, dict):
            raise check.StateDictTypeError(f"state_dict must be a dict, got {type(state_dict)}")
        if isinstance(self._learning_rate, LRScheduler):
            scheduler_state = state_dict.get("LR_Scheduler")
            if scheduler_state is None and not isinstance(self._learning_rate,
                                                          paddle.optimizer.lr.LambdaDecay):
                raise check.StateDictError(
                    "LR_Scheduler state must be included in the state dict except LambdaDecay")
            if scheduler_state is not None and not isinstance(scheduler_state, dict):
                raise TypeError(f"state_dict['LR_Scheduler'] must be a dict, got "
                                f"{type(scheduler_state)}")
        masters = state_dict.get("master_weights")
        if masters is not None:
            if not isinstance(masters, dict):
                raise TypeError(f"state_dict['master_weights'] must be a dict, got "
                                f"{type(masters)}")
            for name, master in self._master_weights.items():
                if name in masters:
                    check.check_state_entry(f"master_weights/{name}", masters[name], master)
        for accumulators in self._accumulators.values():
            for tensor in accumulators.values():
                if tensor.name not in state_dict:
                    raise check.StateDictError(f"optimizer Tensor {tensor.name} not found")
                check.check_state_entry(tensor.name, state_dict[tensor.name], tensor)

    def get_lr(self) -> float:
        if self._learning_rate_tensor is not None:
            return float(self._learning_rate_tensor)
        return super().get_lr()

    def set_lr(self, value: float) -> None:
        super().set_lr(value)
        self._learning_rate_tensor = None

    def set_lr_scheduler(self, scheduler: LRScheduler) -> None:
        super().set_lr_scheduler(scheduler)
        self._learning_rate_tensor = None
