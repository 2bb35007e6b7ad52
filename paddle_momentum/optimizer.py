"""``paddle_momentum.Momentum``: state, parameter groups, schedules and modes around the rule."""

from __future__ import annotations

import paddle
from paddle.base import framework
from paddle.base.dygraph import base as imperative_base
from paddle.base.layer_helper import LayerHelper
from paddle.optimizer import Optimizer
from paddle.optimizer.lr import LRScheduler
from paddle.regularizer import L2Decay

from . import _compat, _declarations, _dispatch, _dygraph, _flat, _groups, _reading, _rules, _static
from . import _validation as check
from ._settings import split_weight_decay
from ._dispatch import STATIC_BATCH_MIN  # noqa: F401  (re-exported)
from ._state import LOW_PRECISION_WARNING, VELOCITY, State  # noqa: F401  (re-exported)

KERNELS = ("auto", "fused", "composed")


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
    at construction, plus keyword-only ``kernel`` ('auto', 'fused', 'composed'),
    ``rescale_grad_on_cpu``, ``rule`` (an update rule of your own, a function like
    :func:`paddle_momentum.momentum_update` that runs in place of it on every path, its fused
    kernel generated from it: ``docs/change_the_rule.md``) and the ``torch.optim.SGD`` options
    ``dampening``, ``maximize`` and ``decoupled_weight_decay`` (SGDW), which default to
    Paddle's behaviour (see :func:`paddle_momentum.momentum_update`). ``rescale_grad`` is applied where the built-in's
    kernels apply it (sparse gradients, GPU); its dense CPU kernel ignores it, and so do we
    unless ``rescale_grad_on_cpu=True`` (as its documentation says it should be applied).
    Deliberate differences from the built-in are listed in ``docs/differences.md``:
    ``learning_rate`` may be a 0-d float Tensor, float16/bfloat16 parameters train on CPU,
    and ``minimize`` works with parameter groups. What the built-in
    writes into the caller's group dicts and onto grouped parameters, this class writes too.

    Everything the built-in reads at step time is read at step time here too (see
    ``_settings``): a learning-rate scale, regularizer or group setting changed between steps
    takes effect in the next step, as in the built-in. This class holds construction, the
    learning rate, the state dict and the public API; it hands the work to collaborators
    that receive what they need: ``_reading.Reader`` (the settings now), ``_state.State``
    (velocities, master weights, one parameter's update), ``_dygraph.DygraphStep`` (the
    dygraph step: plan, prepare, update) and ``_static.StaticOps`` (the static programs'
    update ops).
    """

    _velocity_acc_str = VELOCITY

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
        rescale_grad_on_cpu=False,
        rule=None,
        **options,
    ):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        # the update rule: the package's (None) or the caller's function, on every path
        self._rule = _rules.DEFAULT if rule is None else _rules.Rule(rule)
        for option in options:  # our keyword-only settings (the torch.optim.SGD options)
            if option not in _declarations.KEYWORD_ONLY:
                raise TypeError(f"Momentum() got an unexpected keyword argument {option!r}")
        given = dict(options, momentum=momentum, use_nesterov=use_nesterov,
                     rescale_grad=rescale_grad)
        rule_values = {setting.name: setting.check(given.get(setting.name, setting.default),
                                                   setting.name)
                       for setting in _declarations.RULE_SETTINGS}
        _declarations.check_rule_values(rule_values)
        learning_rate = check.check_learning_rate(learning_rate)
        weight_decay = check.check_weight_decay(weight_decay)
        self._rule.refuse_unreceived(dict(rule_values,
                                          l2_coeff=split_weight_decay(weight_decay)[0]))
        grad_clip = check.check_grad_clip(grad_clip)
        multi_precision = check.check_bool(multi_precision, "multi_precision")
        # (read at every step: _settings.group_settings)
        self._rescale_grad_on_cpu = check.check_bool(rescale_grad_on_cpu, "rescale_grad_on_cpu")
        check.check_bool(use_multi_tensor, "use_multi_tensor")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be None or a str, got {name!r}")

        # Read by _add_param_group, which the base constructor calls for every group.
        self._group_defaults = {"learning_rate": 1.0, "weight_decay": weight_decay,
                                "grad_clip": grad_clip, **rule_values}
        given_parameters = parameters
        parameters = _groups.checked_parameters(parameters, self._group_defaults, self._rule)
        if isinstance(given_parameters, list) and parameters and isinstance(parameters[0], dict):
            _groups.write_group_decays(given_parameters, weight_decay)

        # A dygraph Tensor (read into the lr variable at every step), or a static program's
        # value (the program's learning rate itself); the base class holds a float stand-in.
        self._learning_rate_tensor = (learning_rate if isinstance(learning_rate, paddle.Tensor)
                                      else None)
        self._graph_learning_rate = (learning_rate if _compat.is_tensor(learning_rate)
                                     and self._learning_rate_tensor is None else None)
        fused_l2, other_decay = split_weight_decay(weight_decay)
        # The settings now (it records grouped parameters' attribute objects at construction,
        # in _add_param_group).
        self._settings = _reading.Reader(self)
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
        self._regularization_method, self._regularization_coeff = \
            _groups.fused_decay_setting(fused_l2)
        for setting_name, value in rule_values.items():  # read at every step, as the built-in
            # reads _momentum, _use_nesterov, ... (a Tensor kept: changed in place, it counts)
            given_value = given.get(setting_name)
            setattr(self, f"_{setting_name}",
                    given_value if isinstance(given_value, paddle.Tensor) else value)
        self._multi_precision = bool(multi_precision)
        # use_multi_tensor is accepted for compatibility: results are the same either way, the
        # fused kernel's flat buckets already update many parameters per call, and the base
        # class's multi-tensor hooks (which call Paddle's merged_momentum) stay off.
        self._master_weights = {}
        self._kernel = kernel
        self._state = State(self)
        self._flat = _flat.FlatState()
        self._dygraph_step = _dygraph.DygraphStep(self._settings, self._state, self._flat,
                                                  kernel, self._rule)
        self._static_ops = _static.StaticOps(self._settings, self._state, kernel, self._rule)
        if kernel == "auto" and rule is not None:
            # translated now: a warning names what cannot be (built at the first step)
            self._rule.translation()
        if kernel == "fused":
            # built and checked now, not inside the first step (the table too)
            if not _dispatch.capabilities(self._rule, kernel, wait=True).kernel:
                why = self._rule.why_not()
                raise RuntimeError(
                    f"kernel='fused' was requested but rule {self._rule.name} cannot run in "
                    f"the fused kernel ({why})" if why else
                    "kernel='fused' was requested but the fused kernel could not be built or "
                    "checked (see the warning above); use kernel='auto' to fall back")

    # ------------------------------------------------------------------ construction helpers
    def _add_param_group(self, param_group):
        """Add a group (our normalized copy of ``param_group``), and write its settings onto
        its parameters as the built-in does: ``regularizer`` (the group's non-fused decay,
        None for a float or L2 one) and ``optimize_attr['learning_rate']`` (the group's, 1.0
        when it gives none). A second optimizer built on the same parameters reads them, as
        with the built-in."""
        group = _groups.normalized_group(param_group, len(self._param_groups),
                                         self._group_defaults, self._rule)
        check.check_unique(
            [p for existing in self._param_groups for p in existing["params"]] + group["params"]
        )
        _, regularizer = split_weight_decay(group["weight_decay"])
        for param in group["params"]:
            param.regularizer = regularizer
            if isinstance(getattr(param, "optimize_attr", None), dict):
                param.optimize_attr["learning_rate"] = param_group.get("learning_rate", 1.0)
        self._param_groups.append(group)
        self._settings.construction.add(group)

    # ------------------------------------------------------------------ state
    def _create_accumulators(self, block, parameters):
        for param in parameters:
            self._state.velocity_of(param)

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

    # ------------------------------------------------------------------ static programs
    # (the base class's hooks: its optimization pass calls them)
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
        """The static chain in the built-in's order: clip -> regularize -> update ops."""
        params_grads = _static.clip_gradients(self._grad_clip, params_grads, sort_by_name)
        params_grads = self.append_regularization_ops(params_grads, self.regularization)
        self._static_ops.discard()
        if _compat.in_pir():
            return self._pir_create_optimization_pass(params_grads)
        return self._create_optimization_pass(params_grads)

    def _append_optimize_op(self, block, param_and_grad):
        self._static_ops.add(*param_and_grad, self._static_param_lr)

    def _finish_update(self, block, parameters_and_grads):
        self._static_ops.finish(self._static_param_lr)

    def _static_param_lr(self, param):
        """The base class's learning-rate op for ``param`` (global rate times its scale)."""
        return self._create_param_lr((param, None))

    def _create_regularization_of_grad(self, param, grad, regularization=None):
        # An L2Decay set through ParamAttr is fused into the update, not added here.
        if isinstance(getattr(param, "regularizer", None), L2Decay):
            return grad
        return super()._create_regularization_of_grad(param, grad, regularization)

    # ------------------------------------------------------------------ public API
    @imperative_base.no_grad()
    @framework.non_static_only
    def step(self) -> None:
        """Update every trainable parameter that has a gradient, once."""
        if _compat.in_to_static():
            self._declarative_step()
            return
        self._run_step()

    def _run_step(self, only=None, use_main_grad=True):
        """The dygraph step (``_dygraph.DygraphStep``), in the built-in's order: checks, clip
        and regularization, then the learning rate, then state and updates. Paddle's flags
        are left as the built-in's step (eager ops) leaves them."""
        step = self._dygraph_step
        plan = step.plan(only, use_main_grad)
        try:
            step.prepare(plan)
            with paddle.static.program_guard(paddle.static.default_main_program(),
                                             paddle.static.default_startup_program()):
                for _ in plan:  # the built-in makes one helper per group (a unique name each)
                    self.helper = LayerHelper(self.__class__.__name__)
                self._prepare_learning_rate()
                step.update(plan, self._global_learning_rate(), self._found_inf)
        finally:
            if any(group_plan.units or group_plan.buckets for group_plan in plan):
                _compat.flags_as_after_eager_ops()

    def _found_inf(self) -> bool:
        """True when a GradScaler flagged inf/NaN gradients: then the step changes nothing."""
        found_inf = self._get_auxiliary_var("found_inf")
        if _compat.is_tensor(found_inf):
            found_inf = bool(found_inf)
            self._set_auxiliary_var("found_inf", found_inf)
        return bool(found_inf)

    @imperative_base.no_grad()
    def minimize(self, loss, startup_program=None, parameters=None, no_grad_set=None):
        """Dygraph: ``step()`` restricted to ``parameters`` (Tensors); returns ``([],
        params_grads)`` like the built-in (and also works with parameter groups). As in the
        built-in, ``no_grad_set`` is ignored in dygraph: the gradients exist already.

        Static graph: appends backward, clip, regularization and our update ops to the
        program and returns ``(optimize_ops, params_grads)``.
        """
        if not _compat.is_tensor(loss):
            raise check.LossTypeError(
                f"minimize: loss must be a Tensor, got {check.describe(loss)}")
        if not _compat.in_dygraph():
            if self._settings.grouped():
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
        params_grads = [pair for _, params in self._settings.groups()
                        for pair in _dygraph.gradient_pairs(params, False, only)]
        self._run_step(only, use_main_grad=False)
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
            self._state.loaded()
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
