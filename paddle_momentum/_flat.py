"""Flat buckets: many parameters updated by one fused-kernel call (dygraph, CPU).

A bucket is memory, nothing else: parameters of one group with the same dtype and master
weights or not, and their state. The small members' state is moved into one contiguous
buffer per kind (velocities, master weights): each state tensor becomes a view of its buffer
(the same Python objects, their storage shared), so ``state_dict`` and checkpoints keep
working unchanged. Large members' state keeps its own storage (no copy). The parameters
themselves never move: the gradient table gives the kernel their addresses, so views, slices
and DLPack exports of a parameter keep tracking it. Buckets exist only where the gradient
table does.

Everything else is this step's data, in the table's rows (``_layout.TABLE_ROWS``): whether the
call updates a member (the flag ``IN_CALL``: its settings and its group's let it, see
``_dispatch.member_joins`` and ``group_lets_join``; it is in ``minimize``'s list), its
learning-rate scale, ``need_clip``, its decay (an L2 or L1 coefficient), its first step, and
its gradient's address (0: none this step, frozen or unused, and the call skips it, as the
built-in does). The group's values (momentum, Nesterov, the clip's kind and values, the torch
options) are the call's attributes. So a value changed between steps, a clip switched on, a
frozen layer or a scheduled decay rebuilds nothing: a member's row is written again when its
attribute objects change, and the rows of the members whose decay is the group's when the
group's settings do (a few numpy operations per bucket).

A bucket is a cache of assumptions about memory, checked before each step in the gradient
table's C pass (``csrc/gradient_table.cc``): every member still lives where it was, with its
dtype, size and layout; its velocity and master weight are the tensors in the optimizer's
dicts and still live where the bucket put them (a storage replaced in place is followed);
and the attribute objects its settings were derived from are the same (or changed: those
members' settings are derived again, nothing rebuilt). A changed memory rebuilds the group's
buckets: a parameter list or storage replaced, ``Layer.to``, multi-precision switched, the
master-weight dict replaced by ``set_state_dict``. A member the call does not update this step
but with a gradient (its settings or its group's keep it out, or its gradient does not fit)
is a unit of the step, updated on its own as ``_dispatch.choose`` says.

Gradients stay wherever Paddle puts them: the kernel takes the members' gradients beside the
buffers (two partitions of the same elements), so ``backward``, every form of ``clear_grad``
and gradient hooks need no care, and one kernel call updates the whole bucket: the
per-parameter cost of a step disappears. Members' velocities and master weights are created
in their buffer, one at a time, so the state is never held twice.
"""

from __future__ import annotations

import ctypes
import operator

import numpy as np
import paddle
from paddle.regularizer import L1Decay, L2Decay

from . import _compat, _dispatch, _kernel, _layout
from ._buffers import gather, recording
from ._boundary import bits
from ._settings import attribute_objects, fused_decay_terms

# Parameters of at least this many elements keep their own storage: their update dwarfs the
# per-parameter overhead that gathering saves, and they cost no copy and no memory.
OWN_BUFFER_SIZE = 1 << 16

_SIZE = paddle.Tensor._numel  # (Tensor.size goes through numpy: 5 us against 0.9 us)
_ROW = _layout.TABLE_ROWS
_FLAG = _layout.TABLE_FLAGS
_ATTRIBUTES = 4  # objects per member in a snapshot (_settings.attribute_objects)
_ONE = bits(1.0)


class FlatBucket:
    """Parameters of one group with one memory layout (``dtype``, ``master_weight``) and the
    buffers one kernel call updates.

    ``params`` is the members' order, the one the gradient table follows; ``velocity_buffers``
    and ``master_buffers`` (None without master weights) hold the same elements in the same
    order: first one gathered buffer of the small members (when there are several), then each
    large member's own tensor. ``state`` (``_state.State``) makes the members' state: a small
    member's is born in its buffer (no second copy). ``settings`` are the members'
    ``ParamSettings`` now (in ``params``' order as given); ``fill_table`` is
    ``_kernel.gradient_table()``.
    """

    def __init__(self, params, settings, fill_table, state):
        self.dtype, self.master_weight = settings[0].dtype, settings[0].master_weight
        numels = list(map(_SIZE, params))
        small = [i for i, n in enumerate(numels) if n < OWN_BUFFER_SIZE]
        self._gathered = len(small) if len(small) > 1 else 0
        own = sorted(set(range(len(params))) - set(small[:self._gathered]))
        order = small[:self._gathered] + own
        self.params = [params[i] for i in order]
        settings = [settings[i] for i in order]
        self.sizes = [numels[i] for i in order]
        self.fill_table = fill_table
        # The members' state tensors, as the optimizer's dicts hold them (replacing one
        # there, a momentum reset say, must reach the update: the table checks it), made by
        # :meth:`make_state` when the step reaches the state, as the built-in's does.
        self.velocities = self.masters = self.velocity_buffers = self.master_buffers = None
        self.master_keys = [p.name for p in self.params] if self.master_weight else None
        self._positions = None
        self.table = _kernel.new_gradient_table(self.params, self.fill_table)
        n = len(self.params)
        self.rows = np.frombuffer(
            (ctypes.c_int64 * (_layout.TABLE_ROW_COUNT * n)).from_address(
                self.table.data_ptr()), dtype=np.int64).reshape(_layout.TABLE_ROW_COUNT, n)
        # Each member's own part of this step's values (see _take_settings); the group's part
        # joins them in _join, when the group's settings change.
        self.zero_dim = np.array([p.ndim == 0 for p in self.params])
        self.own_ok = np.zeros(n, bool)  # _dispatch.member_joins
        self.from_group = np.zeros(n, bool)  # its decay is the group's
        self.clipped = np.zeros(n, bool)  # its need_clip
        self.own_flags = np.zeros(n, np.int64)  # HAS_L2 / HAS_L1 of its own decay
        self.own_l2 = np.zeros(n, np.int64)
        self.own_l1 = np.zeros(n, np.int64)
        self.snapshot = [None] * (_ATTRIBUTES * n)
        self._take_settings(range(n), settings)
        self.first_ahead = None  # whose first updates are still ahead (make_state)
        self.in_only = None  # minimize(parameters=): the members listed, this step

    def make_state(self, state):
        """The members' velocities (and master weights), made or taken from ``state``
        (``_state.State``) and moved into the buckets' buffers, once: a small member's is
        born in its buffer (no second copy). This step's first-step flags follow."""
        if self.velocities is not None:
            return
        head = self.params[:self._gathered]

        def buffers(state_of, states):
            """The buffers of ``state_of(member)``, each member's appended to ``states``."""
            state_of = recording(state_of, states)
            flat = [gather(map(state_of, head), self.sizes[:len(head)])] if head else []
            return flat + [state_of(p) for p in self.params[len(head):]]

        velocities, masters = [], [] if self.master_weight else None
        self.master_buffers = (buffers(state.create_master_weight, masters)
                               if self.master_weight else None)
        created = state.zero_velocities(head, self.sizes[:len(head)]) if len(head) > 1 else None
        if created is None:
            self.velocity_buffers = buffers(state.velocity_of, velocities)
        else:  # the small members' velocities made in their buffer (no copy)
            flat, velocities = created
            tail = [state.velocity_of(p) for p in self.params[len(head):]]
            velocities += tail
            self.velocity_buffers = [flat] + tail
        self.velocities, self.masters = velocities, masters
        # (the velocity dict is keyed by the master weight's name where there is one)
        self.velocity_keys = [tensor.name for tensor in (masters or self.params)]
        self.rows[_ROW["VELOCITY_ADDRESS"]] = [v.data_ptr() for v in velocities]
        if masters is not None:
            self.rows[_ROW["MASTER_ADDRESS"]] = [m.data_ptr() for m in masters]
        self.first_ahead = state.first_steps_ahead(self.params)
        if self.first_ahead.any():  # (this step's call: its flags were written before)
            self.rows[_ROW["FLAGS"]] |= np.where(self.first_ahead, _FLAG["FIRST_STEP"], 0)

    # ------------------------------------------------------------------ the members' values
    def _take_settings(self, indices, settings):
        """Members ``indices`` have the ``settings`` (``ParamSettings``) now: their own part
        of the rows, and the attribute objects they were derived from."""
        indices = np.asarray(indices, np.int64)
        objects = [attribute_objects(self.params[i]) for i in indices]
        for i, member_objects in zip(indices.tolist(), objects):
            self.snapshot[_ATTRIBUTES * i:_ATTRIBUTES * (i + 1)] = member_objects
        self.clipped[indices] = [member_objects[3] is not False for member_objects in objects]
        self.own_ok[indices] = [_dispatch.member_joins(s) for s in settings]
        self.from_group[indices] = [s.decay_from_group for s in settings]
        rows = [_decay_row(None if s.decay_from_group
                           else fused_decay_terms(s.l2_coeff, s.regularizer), o[1], s)
                for s, o in zip(settings, objects)]
        if rows:
            self.own_flags[indices], self.own_l2[indices], self.own_l1[indices] = zip(*rows)
        self.rows[_ROW["LR_SCALE"]][indices] = _bits_of(
            [1.0 if _compat.is_tensor(s.lr_scale) else s.lr_scale for s in settings])
        # The regularizer objects whose coefficients the built-in reads at every step: the
        # members' own (an L2Decay among them) and those their settings take; but where the
        # table's fill reads one itself (OWN_L2, OWN_L1).
        own_read = (self.own_flags & (_FLAG["OWN_L2"] | _FLAG["OWN_L1"])) != 0
        regularizers = {id(r): r for r, read in zip(self.snapshot[1::_ATTRIBUTES], own_read)
                        if r is not None and not read}
        self._coefficients = [(r, getattr(r, "_coeff", None)) for r in regularizers.values()]
        self._group_key = None  # (joined again)

    def _coefficients_changed(self) -> bool:
        return any(getattr(r, "_coeff", None) is not coeff for r, coeff in self._coefficients)

    def _join(self, can, group):
        """The rows' base for ``group``'s settings (``GroupSettings``): which members the
        call updates, their flags and decay coefficients."""
        # (one answer per class of member: 0-d or not, clipped or not, decay from the group
        # or not, indexed by those three bits)
        lets = np.array([_dispatch.group_lets_join(can, group, self.dtype, bool(k & 4),
                                                   bool(k & 2), bool(k & 1)) for k in range(8)])
        group_ok = lets[self.zero_dim * 4 + self.clipped * 2 + self.from_group]
        self.in_call = self.own_ok & group_ok
        self._in_call_all = bool(self.in_call.all())
        group_flags, group_l2, group_l1 = _decay_row(
            fused_decay_terms(group.l2_coeff, group.regularizer))
        self.base_flags = (np.where(self.in_call, _FLAG["IN_CALL"], 0)
                           | np.where(self.clipped, _FLAG["CLIPPED"], 0)
                           | np.where(self.from_group, group_flags, self.own_flags))
        self.rows[_ROW["L2"]] = np.where(self.from_group, group_l2, self.own_l2)
        self.rows[_ROW["L1"]] = np.where(self.from_group, group_l1, self.own_l1)

    def _flags_now(self, only, state):
        """The flags row of this step: the base, but for ``minimize``'s list (``only``) and
        the first steps still ahead."""
        flags = self.base_flags
        self.in_only = None
        if only is not None:
            self.in_only = np.fromiter((id(p) in only for p in self.params), bool,
                                       len(self.params))
            flags = np.where(self.in_only, flags, flags & ~_FLAG["IN_CALL"])
        if self.first_ahead is not None:
            self.first_ahead &= state.first_steps_ahead(self.params)  # (loaded, or units')
            if self.first_ahead.any():
                flags = flags | np.where(self.first_ahead, _FLAG["FIRST_STEP"], 0)
            else:
                self.first_ahead = None
        return flags

    # ------------------------------------------------------------------ each step
    def ready(self, can, group, settings_of, state, only=None):
        """The filled gradient table for this step, or None when the bucket must be rebuilt
        (its memory changed). ``group``: the group's ``GroupSettings`` now; ``settings_of
        (param)``: a member's ``ParamSettings`` now; ``state``: the optimizer's
        ``_state.State``; ``only``: ``minimize``'s list (ids), None for all."""
        if self._coefficients and self._coefficients_changed():
            own = [i for i in range(len(self.params))
                   if self.snapshot[_ATTRIBUTES * i + 1] is not None or not self.from_group[i]]
            self._take_settings(own, [settings_of(self.params[i]) for i in own])
        key = (group, getattr(group.regularizer, "_coeff", None),
               _dispatch.clip_values_fusable(group.grad_clip), can.ops)
        states = None  # (no state yet: nothing to check)
        if self.velocities is not None:
            states = [state.velocities(), self.velocity_keys, self.velocities]
            if self.masters is not None:
                states += [state.masters, self.master_keys, self.masters]
        unfit = None
        while True:
            if self._group_key is None or any(map(operator.is_not, key, self._group_key)):
                self._join(can, group)
                self._group_key = key
            flags = self._flags_now(only, state)
            if unfit is not None:
                flags = np.where(unfit, flags & ~_FLAG["IN_CALL"], flags)
            self.rows[_ROW["FLAGS"]] = flags
            result = self.fill_table(self.params, self.table, self.snapshot, states)
            if result >= 0:
                self.updates = result
                self._all_in_call = flags is self.base_flags and self._in_call_all
                return self.table
            code = _layout.table_problem(result)[1]
            status = self.rows[_ROW["STATUS"]]
            if code == _layout.SETTINGS_CHANGED:
                changed = np.flatnonzero(status == _layout.STATUS_CODES["ATTRIBUTES"])
                self._take_settings(changed, [settings_of(self.params[i]) for i in changed])
            elif code == _layout.GRADIENT_UNFIT:  # those members are units this step
                unfit = (status == _layout.STATUS_CODES["GRADIENT"]) | (
                    False if unfit is None else unfit)
            else:
                return None

    def units(self):
        """The members the call does not update this step but another path may (their
        settings or their gradient keep them out of it; ``minimize``'s list includes them)."""
        if self._all_in_call:
            return []
        out = (self.rows[_ROW["FLAGS"]] & _FLAG["IN_CALL"]) == 0
        if self.in_only is not None:
            out &= self.in_only
        return [self.params[i] for i in np.flatnonzero(out)] if out.any() else []

    def updated(self):
        """Which members the call updates this step (after :meth:`ready`), a bool array."""
        return self.rows[_ROW["GRAD_ADDRESS"]] != 0

    def clipped_updated(self):
        """Which members the call updates this step with the group's clip applied."""
        return self.updated() & ((self.rows[_ROW["FLAGS"]] & _FLAG["CLIPPED"]) != 0)

    def first_steps_taken(self, state):
        """The call ran: its members' first updates are behind."""
        if self.first_ahead is not None:
            updated = self.updated()
            state.first_steps_taken([self.params[i]
                                     for i in np.flatnonzero(self.first_ahead & updated)])
            self.first_ahead &= ~updated

    def positions(self, positions_in_group):
        """The members' indices in their group's parameter list (``FlatGroup.positions``),
        in member order (as a numpy array)."""
        if self._positions is None:
            self._positions = np.array([positions_in_group[id(p)][0] for p in self.params],
                                       dtype=np.int64)
        return self._positions


def _decay_row(terms, attribute=None, settings=None):
    """``(flags, L2 bits, L1 bits)`` of a decay's ``(l2, l1)`` terms (None: none fused). With
    a member's ``regularizer`` ``attribute`` and its ``settings``: OWN_L2 (OWN_L1) where its
    decay is that attribute (``settings.decay_from_attribute``), exactly an L2Decay (L1Decay)
    of a float coefficient, which the table's fill then reads at every step."""
    l2, l1 = terms if terms is not None else (None, None)
    flags = (_FLAG["HAS_L2"] if l2 is not None else 0) | (_FLAG["HAS_L1"] if l1 is not None else 0)
    if (settings is not None and settings.decay_from_attribute
            and type(getattr(attribute, "_coeff", None)) is float):
        flags |= {L2Decay: _FLAG["OWN_L2"], L1Decay: _FLAG["OWN_L1"]}.get(type(attribute), 0)
    return flags, bits(l2), bits(l1)


def _bits_of(values):
    """The 64 bits of each of ``values`` (numbers) as doubles, an int64 array (as
    ``_boundary.bits``: exact, a NaN's sign kept)."""
    return np.array(values, np.float64).view(np.int64)


class FlatGroup:
    """One group's buckets and what they were built from: its parameter list (``params``),
    ``multi_precision`` and the optimizer's master-weight dict (``masters``). ``outside``: the
    group's parameters in no bucket; ``waiting``: those of them that had no gradient when the
    buckets were built (one that has a gradient now makes the group's buckets built again)."""

    def __init__(self, params, multi_precision, masters, buckets, outside, waiting,
                 fill_table):
        self.params = list(params)
        self.multi_precision = multi_precision
        self.masters = masters
        self.buckets = buckets
        self.outside = outside
        self.waiting = {id(p) for p in waiting}
        self.positions = {}  # id(param) -> its indices in params
        for index, param in enumerate(self.params):
            self.positions.setdefault(id(param), []).append(index)
        # The outside parameters' gradients, looked for in one C pass (a layer that has had
        # none so far, and so no state: each step asks whether it has one now): a table of
        # them where every one is a dense CPU tensor, else None.
        self._watch = None
        if outside and all(p._is_initialized() and p._numel() != 0 and p.place.is_cpu_place()
                           and fill_table.dtype_code(p) >= 0
                           and getattr(p, "main_grad", None) is None  # (the pass reads .grad)
                           for p in outside):
            self._watch = (fill_table, _kernel.new_gradient_table(outside, fill_table),
                           [obj for p in outside for obj in attribute_objects(p)])

    def outside_without_gradient(self) -> bool:
        """True when no parameter outside the buckets has a gradient now (``.grad``: frozen
        or none; checked in one C pass); False when one has, or where the pass cannot say
        (then the step looks at each)."""
        if self._watch is None:
            return False
        fill_table, table, snapshot = self._watch
        return fill_table(self.outside, table, snapshot, None) == 0

    def current(self, params, multi_precision, masters) -> bool:
        """The buckets were built from these (the group's list now, its multi-precision
        setting and the optimizer's master-weight dict)."""
        return (multi_precision == self.multi_precision and masters is self.masters
                and len(params) == len(self.params)
                and all(map(operator.is_, params, self.params)))


class FlatState:
    """The optimizer's buckets, by group (``FlatGroup``)."""

    def __init__(self):
        self.groups = {}  # id(group) (id(None) without groups) -> FlatGroup

    def clear(self):
        self.groups.clear()

    @property
    def buckets_of_group(self):
        """``{id(group): [bucket, ...]}``."""
        return {key: flat_group.buckets for key, flat_group in self.groups.items()}
