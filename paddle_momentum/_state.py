"""The optimizer's per-parameter state: velocities, master weights, which velocities are new.

The state is stored where Paddle's ``Optimizer`` base class stores it (its accumulators and
``_master_weights``, under the built-in's names), so ``state_dict``/``set_state_dict`` and
checkpoints work unchanged both ways. :class:`State` is the one object the step
(``_dygraph``) and the static-op emission (``_static``) receive to read and create state and
to update one parameter; it holds the base class's storage, not ``Momentum``.
"""

from __future__ import annotations

import warnings

import numpy as np
import paddle
from paddle.utils import unique_name

from . import _buffers, _compat
from ._settings import ParamSettings

VELOCITY = "velocity"

LOW_PRECISION_WARNING = (
    "Accumulating with FP16/BF16 in optimizer can lead to poor accuracy or slow convergence."
    "Consider using multi_precision=True option of the Momentum optimizer."
)


class State:
    """Velocities and master weights of one optimizer, in its base class's storage.

    ``storage`` is the optimizer seen as Paddle's ``Optimizer``: only the base class's
    accumulator and master-weight API is used (``_add_accumulator``,
    ``_get_accumulator_master``, ``_create_master_weight``, ``_accumulators``,
    ``_accumulators_holder``, ``_already_create_accumulator``, ``_master_weights``), plus the
    ``_multi_precision`` flag it reads as the built-in does.
    """

    def __init__(self, storage):
        self._storage = storage
        self._new_velocities = set()  # names of parameters whose velocity is new, unused

    @property
    def masters(self) -> dict:
        """``{param name: master weight}`` (the base class's dict: ``set_state_dict`` may
        replace it)."""
        return self._storage._master_weights

    def uses_master_weight(self, param) -> bool:
        return bool(self._storage._multi_precision) and _compat.is_low_precision(param.dtype)

    def create_master_weight(self, param):
        return self._storage._create_master_weight(param)

    def _kind(self) -> str:
        """The velocities' accumulator kind (the base class prefixes it with the optimizer's
        ``name``)."""
        name = self._storage._name
        return VELOCITY if name is None else f"{name}_{VELOCITY}"

    def velocities(self) -> dict:
        """``{param (or master weight) name: velocity}``."""
        return self._storage._accumulators[self._kind()]

    def has_state(self, param) -> bool:
        """``param``'s velocity exists (made by an update, or waiting in a loaded state
        dict)."""
        return param.name in self._storage._already_create_accumulator

    def velocity_of(self, param):
        """``param``'s velocity, created on first use (zeros, or what a state dict loaded
        before the first step holds); it follows the master weight where there is one."""
        storage = self._storage
        if param.name not in storage._already_create_accumulator:
            if self.uses_master_weight(param):
                target = storage._create_master_weight(param)
            else:
                if _compat.is_low_precision(param.dtype):
                    warnings.warn(LOW_PRECISION_WARNING)
                target = param
            if not storage._accumulators_holder:  # (else it comes from a loaded state dict)
                self._new_velocities.add(param.name)
            storage._add_accumulator(VELOCITY, target)
            storage._already_create_accumulator.add(param.name)
        return storage._get_accumulator_master(VELOCITY, param)

    def zero_velocities(self, params, sizes):
        """``(buffer, velocities)``: new zero velocities for ``params`` (of ``sizes``
        elements) as consecutive views of one new zeros buffer, registered as the built-in's
        ``_add_accumulator`` registers them (persistable, the same names drawn from the
        unique-name generator in the same order): about 7 us a parameter instead of 40.
        None where that path must run: a parameter has state already or takes a master
        weight or a low-precision warning, or a loaded state dict waits for its velocities."""
        storage = self._storage
        if (storage._accumulators_holder or any(
                p.name in storage._already_create_accumulator or self.uses_master_weight(p)
                or _compat.is_low_precision(p.dtype) for p in params)):
            return None
        kind = self._kind()
        getattr(storage, "need_refuse", lambda: None)()  # (as _add_accumulator; Paddle 3.3)
        names = [unique_name.generate(f"{p.name}_{kind}") for p in params]
        storage._opti_name_list.extend(names)
        buffer = paddle.zeros([sum(sizes)], params[0].dtype)
        velocities = _buffers.views_of(buffer, sizes, [p.shape for p in params], names)
        storage._accumulators[kind].update(zip((p.name for p in params), velocities))
        storage._already_create_accumulator.update(p.name for p in params)
        self._new_velocities.update(p.name for p in params)
        return buffer, velocities

    def check_fits(self, param, settings: ParamSettings):
        """Raise ValueError when ``param`` no longer fits the state it already has: its dtype
        or shape changed in place (``paddle.assign(float32_tensor, output=float64_param)``).
        The built-in's kernel raises ValueError there too, after earlier parameters moved."""
        if param.name not in self._storage._already_create_accumulator:
            return
        master = self.masters.get(param.name)
        velocity = self.velocities().get(param.name if master is None else master.name)
        expected_dtype = "float32" if settings.master_weight else settings.dtype
        if velocity is not None and settings.master_weight != (master is not None):
            raise ValueError(
                f"parameter {param.name}'s state was created "
                f"{'with' if master is not None else 'without'} a master weight, but "
                f"multi_precision={self._storage._multi_precision} now asks "
                f"{'for' if settings.master_weight else 'not for'} one")
        if velocity is not None and (_compat.dtype_name(velocity.dtype) != expected_dtype
                                     or list(velocity.shape) != list(param.shape)):
            raise ValueError(
                f"parameter {param.name} is now {settings.dtype} {list(param.shape)}, but its "
                f"velocity is {_compat.dtype_name(velocity.dtype)} {list(velocity.shape)}"
                + ": the optimizer state no longer fits the parameter")

    def fits(self, param, settings: ParamSettings) -> bool:
        """``param`` fits the state it has (:meth:`check_fits` would not raise)."""
        try:
            self.check_fits(param, settings)
        except ValueError:
            return False
        return True

    # ------------------------------------------------------------------ torch's first step
    def loaded(self):
        """A state dict was loaded: every velocity is an existing buffer (for dampening:
        torch's first step is behind it), even one created, unused, in a skipped step."""
        self._new_velocities.clear()

    def first_steps_ahead(self, params):
        """Whether each of ``params`` has its first update ahead (torch's dampening starts
        the velocity undamped there), as a numpy bool array."""
        new = self._new_velocities
        return np.fromiter((p.name in new for p in params), bool, len(params))

    def first_steps_taken(self, params):
        """``params`` were updated: their first updates are behind."""
        self._new_velocities.difference_update(p.name for p in params)

    def first_step(self, param):
        """Whether this is ``param``'s first update since its velocity was created (torch's
        momentum buffer starts there, undamped): dygraph knows it now (a velocity loaded from
        a state dict is not new); a static program gets a persistable 0-d flag, 1 until its
        first run (the update resets it)."""
        if _compat.in_dygraph():
            first = param.name in self._new_velocities
            self._new_velocities.discard(param.name)
            return first
        return self._storage._add_accumulator("torch_first_step", param, dtype="float32",
                                              fill_value=1.0, shape=[])

    # ------------------------------------------------------------------ one parameter's update
    def update(self, param, grad, settings: ParamSettings, implementation, lr, can):
        """Apply the rule to one parameter with ``implementation`` (a
        ``_dispatch.Implementation``, run as given) and learning rate ``lr`` (a tensor: the
        global rate times the parameter's scale); ``can`` (``_dispatch.Capabilities``) holds
        the rule and its kernel. Writes param, velocity and master weight back."""
        velocity = self._storage._get_accumulator_master(VELOCITY, param)
        master = self.masters[param.name] if settings.master_weight else None
        options = settings.rule_options(sparse=_compat.is_sparse(grad))
        if _compat.is_sparse(grad):
            # The built-in's sparse kernel = the dense update on the merged rows, zeros
            # elsewhere (so absent rows still decay), rescale_grad applied.
            grad = _compat.dense_gradient(grad, param)
        # (in dygraph taken at every update: dampening switched on later damps at once)
        first_step = (self.first_step(param) if options["dampening"] or _compat.in_dygraph()
                      else False)
        implementation.run(can, param, grad, velocity, master, lr, first_step=first_step,
                           **options)
