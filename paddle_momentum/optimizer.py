"""``paddle_momentum.Momentum``: state, parameter groups, schedules and modes around the rule."""

from __future__ import annotations

import warnings

import numpy as np
import paddle
from paddle.base import framework
from paddle.base.dygraph import base as imperative_base
from paddle.optimizer import Optimizer
from paddle.optimizer.lr import LRScheduler
from paddle.utils import unique_name

from . import _compat, _dispatch, _flat, _kernel, _settings, implementations
from . import _validation as check
from ._dygraph import DygraphStep
from ._settings import ParamSettings, split_weight_decay
from ._dispatch import STATIC_BATCH_MIN  # noqa: F401  (re-exported)
from ._static import StaticOps

_VELOCITY = "velocity"
KERNELS = ("auto", "fused", "composed")

LOW_PRECISION_WARNING = (
    "Accumulating with FP16/BF16 in optimizer can lead to poor accuracy or slow convergence."
    "Consider using multi_precision=True option of the Momentum optimizer."
)


class Momentum(DygraphStep, StaticOps, Optimizer):
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

    Everything the built-in reads at step time is read at step time here too (see
    ``_settings``): a learning-rate scale, regularizer or group setting changed between steps
    takes effect in the next step, as in the built-in. The class is split along its halves:
    ``_dygraph.DygraphStep`` (the step as a plan of units) and ``_static.StaticOps`` (op
    emission in static programs); what both use (settings, state, one parameter's update) is
    here.
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
        **options,
    ):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        for option in options:  # our keyword-only settings (the torch.optim.SGD options)
            if option not in _settings.KEYWORD_ONLY:
                raise TypeError(f"Momentum() got an unexpected keyword argument {option!r}")
        given = dict(options, momentum=momentum, use_nesterov=use_nesterov,
                     rescale_grad=rescale_grad)
        rule_values = {setting.name: setting.check(given.get(setting.name, setting.default),
                                                   setting.name)
                       for setting in _settings.RULE_SETTINGS}
        _settings.check_rule_values(rule_values)
        learning_rate = check.check_learning_rate(learning_rate)
        weight_decay = check.check_weight_decay(weight_decay)
        grad_clip = check.check_grad_clip(grad_clip)
        multi_precision = check.check_bool(multi_precision, "multi_precision")
        check.check_bool(use_multi_tensor, "use_multi_tensor")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be None or a str, got {name!r}")

        # Read by _add_param_group, which the base constructor calls for every group.
        self._group_defaults = {"learning_rate": 1.0, "weight_decay": weight_decay,
                                "grad_clip": grad_clip, **rule_values}
        parameters = self._checked_parameters(parameters)

        # A dygraph Tensor (read into the lr variable at every step), or a static program's
        # value (the program's learning rate itself); the base class holds a float stand-in.
        self._learning_rate_tensor = (learning_rate if isinstance(learning_rate, paddle.Tensor)
                                      else None)
        self._graph_learning_rate = (learning_rate if _compat.is_tensor(learning_rate)
                                     and self._learning_rate_tensor is None else None)
        fused_l2, other_decay = split_weight_decay(weight_decay)
        # Grouped parameters' attribute objects at construction (read by _add_param_group).
        self._construction = _settings.ConstructionAttributes()
        self._derivations = _settings.Derivations()
        super().__init__(
            learning_rate=(float(learning_rate) if self._learning_rate_tensor is not None
                           else 0.0 if self._graph_learning_rate is not None
                           else learning_rate),
            parameters=parameters,
            weight_decay=other_decay,
            grad_clip=grad_clip,
            name=name,
        )
        self.type = "momentum"
        self._default_dict = self._group_defaults
        # The built-in's names for the fused decay, which it reads at every step (the
        # non-fused one is the base class's ``regularization``).
        self._regularization_method, self._regularization_coeff = _fused_decay_setting(
            fused_l2)
        for setting_name, value in rule_values.items():  # read at every step, as the built-in
            setattr(self, f"_{setting_name}", value)  # reads _momentum, _use_nesterov, ...
        self._multi_precision = bool(multi_precision)
        # use_multi_tensor is accepted for compatibility: results are the same either way, the
        # fused kernel's flat buckets already update many parameters per call, and the base
        # class's multi-tensor hooks (which call Paddle's merged_momentum) stay off.
        self._master_weights = {}
        self._new_velocities = set()  # names of parameters whose velocity is new, unused
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
        validators = {
            "learning_rate": check.check_lr_scale,
            "weight_decay": check.check_weight_decay,
            "grad_clip": check.check_grad_clip,
            **{setting.name: setting.check for setting in _settings.RULE_SETTINGS},
        }
        # (the two regularization keys a built-in adds are recomputed, as the built-in does)
        allowed = ["params", *validators]
        unknown = sorted(set(group) - set(allowed)
                         - {"regularization_method", "regularization_coeff"})
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; allowed: {allowed}")
        defaults = self._group_defaults
        normalized = {"params": check.check_parameter_list(group["params"], f"{where}['params']")}
        if isinstance(group.get("weight_decay"), (int, np.integer)):
            # the built-in converts an int only at the top level; in a group it fails at the
            # first step ("'int' object is not callable")
            raise TypeError(f"{where}['weight_decay'] must be None, a float or a "
                            f"WeightDecayRegularizer, got the int {group['weight_decay']!r}")
        for key, validate in validators.items():
            normalized[key] = (
                validate(group[key], f"{where}['{key}']") if key in group else defaults[key]
            )
        _settings.check_rule_values(normalized)
        # The built-in's group keys for the fused decay, read at every step.
        normalized["regularization_method"], normalized["regularization_coeff"] = \
            _fused_decay_setting(split_weight_decay(normalized["weight_decay"])[0])
        return normalized

    def _add_param_group(self, param_group):
        """Add a group without touching the caller's dict or the parameters' attributes."""
        group = self._normalized_group(param_group, len(self._param_groups))
        check.check_unique(
            [p for existing in self._param_groups for p in existing["params"]] + group["params"]
        )
        self._param_groups.append(group)
        self._construction.add(group)

    # ------------------------------------------------------------------ settings
    def _grouped(self) -> bool:
        return bool(self._param_groups) and isinstance(self._param_groups[0], dict)

    def _group_settings(self, group) -> _settings.GroupSettings:
        """``group``'s settings now (``group`` None: the optimizer's, without groups)."""
        return self._derivations.group(id(group), _settings.group_settings(group, self))

    def _settings_of(self, param, group_settings) -> ParamSettings:
        """``param``'s settings now: the one derivation every path uses (``_settings``)."""
        return self._derivations.settings(param, group_settings, self._grouped(),
                                          self._construction)

    def _uses_master_weight(self, param) -> bool:
        return self._multi_precision and _compat.is_low_precision(param.dtype)

    def _param_lr(self, param, settings: ParamSettings):
        """The learning rate tensor for ``param``: global lr times its scale (a tensor op)."""
        if not _compat.in_dygraph():  # the base class applies the scale (with static guards)
            return self._create_param_lr((param, None))
        if _compat.is_tensor(settings.lr_scale):  # the built-in takes it as the lr itself
            return settings.lr_scale
        lr = self._global_learning_rate()
        return lr if settings.lr_scale == 1.0 else lr * settings.lr_scale

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
            if not self._accumulators_holder:  # (else it comes from a loaded state dict)
                self._new_velocities.add(param.name)
            self._add_accumulator(self._velocity_acc_str, target)
            self._already_create_accumulator.add(param.name)
        return self._get_accumulator_master(self._velocity_acc_str, param)

    def _zero_velocities(self, params, sizes):
        """``(buffer, velocities)``: new zero velocities for ``params`` (of ``sizes``
        elements) as consecutive views of one new zeros buffer, registered as the built-in's
        ``_add_accumulator`` registers them (persistable, the same names drawn from the
        unique-name generator in the same order): about 7 us a parameter instead of 40.
        None where that path must run: a parameter has state already or takes a master
        weight or a low-precision warning, or a loaded state dict waits for its velocities."""
        if (self._accumulators_holder or any(
                p.name in self._already_create_accumulator or self._uses_master_weight(p)
                or _compat.is_low_precision(p.dtype) for p in params)):
            return None
        kind = self._velocity_acc_str
        kind = kind if self._name is None else f"{self._name}_{kind}"
        getattr(self, "need_refuse", lambda: None)()  # (as _add_accumulator; Paddle 3.3)
        names = [unique_name.generate(f"{p.name}_{kind}") for p in params]
        self._opti_name_list.extend(names)
        buffer = paddle.zeros([sum(sizes)], params[0].dtype)
        velocities = _flat.views_of(buffer, sizes, [p.shape for p in params], names)
        self._accumulators[kind].update(zip((p.name for p in params), velocities))
        self._already_create_accumulator.update(p.name for p in params)
        self._new_velocities.update(p.name for p in params)
        return buffer, velocities

    def _velocity_dict(self):
        """``{param (or master weight) name: velocity}`` (the base class prefixes the kind
        with the optimizer's ``name``)."""
        kind = self._velocity_acc_str
        return self._accumulators[kind if self._name is None else f"{self._name}_{kind}"]

    def _check_state_fits(self, param, settings: ParamSettings):
        """Raise ValueError when ``param`` no longer fits the state it already has: its dtype
        or shape changed in place (``paddle.assign(float32_tensor, output=float64_param)``).
        The built-in's kernel raises ValueError there too, after earlier parameters moved."""
        if param.name not in self._already_create_accumulator:
            return
        master = self._master_weights.get(param.name)
        velocity = self._velocity_dict().get(
            param.name if master is None else master.name)
        expected_dtype = "float32" if settings.master_weight else settings.dtype
        if velocity is not None and settings.master_weight != (master is not None):
            raise ValueError(
                f"parameter {param.name}'s state was created "
                f"{'with' if master is not None else 'without'} a master weight, but "
                f"multi_precision={self._multi_precision} now asks "
                f"{'for' if settings.master_weight else 'not for'} one")
        if velocity is not None and (_compat.dtype_name(velocity.dtype) != expected_dtype
                                     or list(velocity.shape) != list(param.shape)):
            raise ValueError(
                f"parameter {param.name} is now {settings.dtype} {list(param.shape)}, but its "
                f"velocity is {_compat.dtype_name(velocity.dtype)} {list(velocity.shape)}"
                + ": the optimizer state no longer fits the parameter")

    def _create_global_learning_rate(self):
        """The program's learning rate: the graph value given as ``learning_rate`` (made 0-d,
        in its own dtype: the update casts it as it casts a float's variable), else the base
        class's variable."""
        if self._graph_learning_rate is None or _compat.in_dygraph():
            return super()._create_global_learning_rate()
        program = paddle.static.default_main_program()
        if program not in self._learning_rate_map:
            if _compat.program_of(self._graph_learning_rate) is not program:
                raise TypeError("learning_rate is a value of another program than the one "
                                "being minimized: give each program its own optimizer and "
                                "learning-rate value")
            with _compat.optimizer_role(program):
                self._learning_rate_map[program] = self._graph_learning_rate.reshape([])
        return None

    def _prepare_learning_rate(self):
        self._create_global_learning_rate()
        if self._learning_rate_tensor is not None:
            lr = self._global_learning_rate()
            value = _compat.cast(self._learning_rate_tensor.reshape([]), lr.dtype)
            _compat.write_into(lr, value)

    # ------------------------------------------------------------------ one parameter's update
    def _update_param(self, param, grad, settings: ParamSettings, implementation):
        """Apply the rule to one parameter with ``implementation`` (``_dispatch.FUSED`` or
        ``COMPOSED``) and write param, velocity and master weight back."""
        velocity = self._get_accumulator_master(self._velocity_acc_str, param)
        master = self._master_weights[param.name] if settings.master_weight else None
        if _compat.is_sparse(grad):
            # The built-in's sparse kernel = the dense update on the merged rows, zeros
            # elsewhere (so absent rows still decay), rescale_grad applied.
            grad = _compat.dense_gradient(grad, param)
        options = settings.rule_options()
        # (in dygraph taken at every update: dampening switched on later damps at once)
        first_step = (self._first_step(param) if options["dampening"] or _compat.in_dygraph()
                      else False)
        update = (implementations.fused if implementation == _dispatch.FUSED
                  else implementations.composed)
        update(param, grad, velocity, master, self._param_lr(param, settings),
               first_step=first_step, **options)

    def _mixed_first_steps(self, params) -> bool:
        """Some of ``params`` have their first update ahead (torch's dampening starts the
        velocity undamped there), others not: they cannot share one fused call."""
        first = [p.name in self._new_velocities for p in params]
        return any(first) and not all(first)

    def _first_steps(self, params) -> bool:
        """``_first_step`` of every one of ``params`` (which agree: not mixed)."""
        first = bool(params) and params[0].name in self._new_velocities
        self._new_velocities.difference_update(p.name for p in params)
        return first

    def _first_step(self, param):
        """Whether this is ``param``'s first update since its velocity was created (torch's
        momentum buffer starts there, undamped): dygraph knows it now (a velocity loaded from
        a state dict is not new); a static program gets a persistable 0-d flag, 1 until its
        first run (the update resets it)."""
        if _compat.in_dygraph():
            first = param.name in self._new_velocities
            self._new_velocities.discard(param.name)
            return first
        return self._add_accumulator("torch_first_step", param, dtype="float32",
                                     fill_value=1.0, shape=[])

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
        """Dygraph: ``step()`` restricted to ``parameters`` (Tensors); returns ``([],
        params_grads)`` like the built-in (and also works with parameter groups). As in the
        built-in, ``no_grad_set`` is ignored in dygraph: the gradients exist already.

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
        only = None  # (the built-in's dygraph minimize takes .grad, never main_grad)
        if parameters:
            for param in parameters:
                if not _compat.is_tensor(param):
                    raise TypeError(f"minimize(parameters=...) takes a list of Tensors in "
                                    f"dygraph mode (so does the built-in), got {param!r}")
            only = {id(p) for p in parameters}
        params_grads = [pair for _, params in self._group_params()
                        for pair in self._gradient_pairs(params, False, only)]
        self._optimize(self._plan(only, use_main_grad=False))
        return [], params_grads

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``clear_grad(set_to_zero=not set_to_none)``, as Paddle 3.3 defines it (the base
        class of 3.0-3.2 has none)."""
        self.clear_grad(set_to_zero=not set_to_none)

    @framework.dygraph_only
    def set_state_dict(self, state_dict) -> None:
        """Load a state dict (ours or the built-in's): every entry is checked before anything
        changes, so a bad dict leaves velocities, master weights and the schedule as they were."""
        self._check_state_dict(state_dict)
        schedulers = _schedulers_in(self._learning_rate)
        saved = [dict(scheduler.__dict__) for scheduler in schedulers]
        try:
            super().set_state_dict(state_dict)
            # every velocity is now a loaded, existing buffer (for dampening: torch's first
            # step is behind it), even one created, unused, in a skipped step before
            self._new_velocities.clear()
        except BaseException:  # what the checks above cannot foresee: put the schedule back
            for scheduler, state in zip(schedulers, saved):
                scheduler.__dict__.clear()
                scheduler.__dict__.update(state)
            raise

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
            if scheduler_state:
                self._learning_rate.state_keys()
                missing = [key for key in self._learning_rate.keys if key not in scheduler_state]
                if missing:  # the built-in raises this after setting the keys before it
                    raise RuntimeError(
                        "Please check whether state_dict is correct for optimizer. Can't find "
                        f"{missing} in state_dict['LR_Scheduler']")
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
        if self._graph_learning_rate is not None:
            raise TypeError("the learning rate is a value of the static program (it has no "
                            "value until the program runs): fetch it with Executor.run")
        return super().get_lr()

    def set_lr(self, value: float) -> None:
        super().set_lr(value)
        self._learning_rate_tensor = self._graph_learning_rate = None

    def set_lr_scheduler(self, scheduler: LRScheduler) -> None:
        super().set_lr_scheduler(scheduler)
        self._learning_rate_tensor = self._graph_learning_rate = None


def _schedulers_in(learning_rate):
    """The LR schedulers a ``set_state_dict`` may change: ``learning_rate`` and any it wraps
    (``LinearWarmup`` around another scheduler)."""
    schedulers = []
    while isinstance(learning_rate, LRScheduler):
        schedulers.append(learning_rate)
        learning_rate = getattr(learning_rate, "learning_rate", None)
    return schedulers


def _fused_decay_setting(fused_l2):
    """``(regularization_method, regularization_coeff)`` as the built-in names a fused L2
    coefficient (None: no fused decay)."""
    return ("", 0.0) if fused_l2 is None else ("l2_decay", fused_l2)
