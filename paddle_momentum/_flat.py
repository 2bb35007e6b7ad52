"""Flat buffers: many parameters updated by one fused-kernel call (dygraph, CPU).

Parameters of one group that share their structural settings (dtype, master weight or not,
fused L2 coefficient, the kind of clip and L1 term) form a bucket; their values (learning-rate
scale, ``need_clip``, clip bounds and factors, momentum, Nesterov, rescale_grad) are read at
every step and reach the kernel as the gradient table's rows and the op's attributes, so a
value changed every step rebuilds nothing. The small members' state is moved into one
contiguous buffer per kind (velocities, master weights): each state tensor becomes a view of
its buffer (the same Python objects, their storage shared), so ``state_dict`` and checkpoints
keep working unchanged. Large members' state keeps its own storage (no copy). The parameters
themselves never move: the gradient table gives the kernel their addresses, so views, slices
and DLPack exports of a parameter keep tracking it. Buckets exist only where the gradient
table does; without it every parameter is updated on its own.

Gradients stay wherever Paddle puts them: the kernel takes the members' gradients beside the
buffers (two partitions of the same elements), so ``backward``, every form of ``clear_grad``
and gradient hooks need no care, and one kernel call updates the whole bucket: the
per-parameter cost of a step disappears. The gradients reach the kernel as a gradient table
(their addresses, gathered and checked in one C call, ``csrc/gradient_table.cc``).

A bucket is a cache of assumptions, so before each step it checks, cheaply, every one of them
(in the gradient table's C pass): that every member still lives where it was, with the dtype,
size and layout it had; that the attribute objects its settings were derived from
(``_settings.attribute_objects``) are the same (a learning-rate scale replaced by another
number only updates its row); and the
optimizer checks that the group's own settings, and its list of parameters, are as they were.
A member without a gradient (frozen, unused in this backward, released) or with one that does
not fit sends the bucket through the per-parameter path for that step (which checks, and
raises, before anything is written). Anything else that changed makes the optimizer derive the
settings again and rebuild its buckets (a replaced parameter storage, ``Layer.to``, a new
regularizer, a master-weight dict replaced by ``set_state_dict``); attribute objects whose
settings keep the bucket's key only refresh the snapshot and the rows. Members'
velocities and master weights are created in their buffer, one at a time, so the state is
never held twice.
"""

from __future__ import annotations

import ctypes
import operator

import numpy as np
import paddle

from . import _compat, _kernel, _layout
from ._settings import attribute_objects

# Parameters of at least this many elements keep their own storage: their update dwarfs the
# per-parameter overhead that gathering saves, and they cost no copy and no memory.
OWN_BUFFER_SIZE = 1 << 16


def _need_clip(param):
    return getattr(param, "need_clip", True)


def _recording(state_of, states):
    """``state_of`` that also appends each state it returns to ``states``."""
    def recorded(param):
        state = state_of(param)
        states.append(state)
        return state
    return recorded


_SIZE = paddle.Tensor._numel  # (Tensor.size goes through numpy: 5 us against 0.9 us)


def _gather(tensors, sizes):
    """A new contiguous CPU buffer holding ``tensors`` (contiguous CPU tensors of ``sizes``
    elements), each made a view of it. ``tensors`` may be a lazy iterable: each tensor is then
    created just before it moves in, and its own storage freed right after, so the next one
    can reuse it.

    Done on the tensors' ``DenseTensor``s (slice, copy the bytes, share, restore the dims):
    with eager tensors (``_slice``, ``reshape``, ``assign``, ``_share_buffer_to``) each member
    cost about 40 us, most of a first step over 20,000 small parameters."""
    flat, offset = None, 0
    for tensor, size in zip(tensors, sizes):
        if flat is None:
            flat = paddle.empty([sum(sizes)], tensor.dtype)
            flat_dense, itemsize = flat.get_tensor(), flat.element_size()
        dense = tensor.get_tensor()
        piece = flat_dense._slice(offset, offset + size)
        ctypes.memmove(piece._ptr(), tensor.data_ptr(), size * itemsize)
        dims = dense.shape()
        dense._share_data_with(piece)
        dense._set_dims(dims)
        offset += size
    return flat


def views_of(flat, sizes, shapes, names):
    """Persistable tensors of ``shapes`` (``sizes`` elements each) and ``names`` that are
    consecutive views of the CPU buffer ``flat`` (their data shared, as in ``_gather``),
    without a copy; made as the built-in makes its accumulators (``Block.create_var``)."""
    flat_dense, offset, views = flat.get_tensor(), 0, []
    dtype = _compat.proto_dtype(flat.dtype)
    for size, shape, name in zip(sizes, shapes, names):
        view = paddle.Tensor(dtype, shape, name, _compat.DENSE_TENSOR, True)
        view.retain_grads()
        dense = view.get_tensor()
        dense._share_data_with(flat_dense._slice(offset, offset + size))
        dense._set_dims(shape)
        views.append(view)
        offset += size
    return views


# What FlatBucket.gradients() returns besides the gradients.
NOT_WHOLE = "not whole"  # a member lacks a usable gradient: update member by member this step
CHANGED = "changed"  # a member's storage, dtype, size or layout changed: rebuild
SETTINGS_CHANGED = "settings changed"  # a member's attribute objects changed: derive again


class FlatBucket:
    """Parameters with identical structural settings and the buffers one kernel call updates.

    ``key`` is the members' ``ParamSettings.batch_key()`` with the gradient ops' kinds
    (``_settings.fused_gradient_ops``). ``params`` is the members' order, the one the
    gradient table follows; ``velocity_buffers`` and ``master_buffers`` (None without master
    weights) hold the same elements in the same order: first one gathered buffer of the small
    members (when there are several), then each large member's own tensor.
    ``velocity_of(param)`` and ``master_of(param)`` (None: no master weights) return a
    member's state, creating it if it does not exist yet: a small member's is then born in
    its buffer (no second copy). ``zero_velocities(params, sizes)``, where given, creates
    the small members' velocities at once as views of a new zeros buffer and returns
    ``(buffer, velocities)``, or None (then ``velocity_of`` does). ``fill_table`` is
    ``_kernel.gradient_table()`` (a bucket needs it). ``lr_scales`` and ``need_clips`` are
    the members' values now (see :meth:`write_values`); ``regularizers`` the non-fused
    regularizers their settings take (a group's ``L1Decay``, say), whose coefficients the
    built-in reads at every step.
    """

    def __init__(self, key, params, fill_table, velocity_of, lr_scales, need_clips,
                 regularizers, master_of=None, zero_velocities=None):
        self.key = key
        numels = list(map(_SIZE, params))
        small = [i for i, n in enumerate(numels) if n < OWN_BUFFER_SIZE]
        gathered = small if len(small) > 1 else []
        own = sorted(set(range(len(params))) - set(gathered))
        order = gathered + own
        self.params = [params[i] for i in order]
        self.sizes = [numels[i] for i in order]
        head = self.params[:len(gathered)]

        def buffers(state_of, states=None):
            """The buffers of ``state_of(member)``, each member's appended to ``states``."""
            if states is not None:
                state_of = _recording(state_of, states)
            flat = [_gather(map(state_of, head), self.sizes[:len(head)])] if head else []
            return flat + [state_of(p) for p in self.params[len(head):]]

        self.fill_table = fill_table
        # The members' state tensors, as the optimizer's dicts hold them: replacing one
        # there (a momentum reset, say) must reach the update (see FlatState.ready).
        self.velocities = []
        self.masters = [] if master_of else None
        self.master_buffers = buffers(master_of, self.masters) if master_of else None
        created = (zero_velocities(head, self.sizes[:len(head)])
                   if zero_velocities is not None and len(head) > 1 else None)
        if created is None:
            self.velocity_buffers = buffers(velocity_of, self.velocities)
        else:  # the small members' velocities made in their buffer (no copy)
            flat, self.velocities = created
            tail = [velocity_of(p) for p in self.params[len(head):]]
            self.velocities += tail
            self.velocity_buffers = [flat] + tail
        self.master_keys = [p.name for p in self.params] if master_of else None
        # (the velocity dict is keyed by the master weight's name where there is one)
        self.velocity_keys = [state.name for state in (self.masters or self.params)]
        self._positions = None
        self.table = _kernel.new_gradient_table(self.params, self.fill_table)
        self.regularizers = {id(r): r for r in regularizers if r is not None}
        self.stepped = False  # updated whole once: its members' first updates are behind
        self.refresh_snapshot()
        positions = {id(p): i for i, p in enumerate(params)}
        self.write_values([lr_scales[positions[id(p)]] for p in self.params],
                          [need_clips[positions[id(p)]] for p in self.params])

    def refresh_snapshot(self):
        """Remember the members' attribute objects as they are now (see ``gradients``), and
        the coefficients of their own regularizers and of those their settings take (which
        the built-in reads at every step, so changing one in place counts too)."""
        self.snapshot = [obj for p in self.params for obj in attribute_objects(p)]
        regularizers = dict(self.regularizers)
        regularizers.update((id(r), r) for r in self.snapshot[1::3] if r is not None)
        self.coefficients = [(r, getattr(r, "_coeff", None)) for r in regularizers.values()]

    def write_values(self, lr_scales=None, need_clips=None):
        """Put the members' learning-rate scales (floats, in member order) and ``need_clip``
        values (None: either kept) into the table's rows, which the kernel reads at every
        step. (The table's fill itself keeps a scale up to date where a plain number
        replaces it.)"""
        n = len(self.params)
        rows = np.frombuffer(
            (ctypes.c_int64 * (_layout.TABLE_ROW_COUNT * n)).from_address(
                self.table.data_ptr()), dtype=np.int64).reshape(_layout.TABLE_ROW_COUNT, n)
        if lr_scales is not None:
            rows[_layout.TABLE_ROWS["LR_SCALE"]] = np.array(lr_scales, np.float64).view(np.int64)
        if need_clips is not None:
            self.need_clips = list(need_clips)
            self._clipped = np.array([need_clip is not False for need_clip in self.need_clips])
            rows[_layout.TABLE_ROWS["CLIPPED"]] = self._clipped

    def need_clip_changed(self) -> bool:
        """A member's ``need_clip`` (which a clip reads at every step) is another object."""
        return not all(map(operator.is_, map(_need_clip, self.params), self.need_clips))

    def clipped(self):
        """The members the group's clip applies to now (their ``need_clip``), as a numpy
        bool array in member order (kept from the last ``write_values``: do not modify)."""
        return self._clipped

    def _settings_changed(self) -> bool:
        return any(getattr(r, "_coeff", None) != coeff for r, coeff in self.coefficients)

    def _states(self, velocities, master_weights):
        """(dict, keys, tensors) triples: the members' state as the optimizer's dicts must
        still hold it."""
        states = [velocities, self.velocity_keys, self.velocities]
        if self.masters is not None:
            states += [master_weights, self.master_keys, self.masters]
        return states

    def gradients(self, velocities, master_weights):
        """The filled gradient table (see ``csrc/gradient_table.cc``) when the bucket can be
        updated whole this step; else ``NOT_WHOLE``, ``CHANGED`` or ``SETTINGS_CHANGED`` (see
        above). ``velocities`` and ``master_weights`` are the optimizer's dicts now."""
        if self.coefficients and self._settings_changed():
            return SETTINGS_CHANGED
        states = self._states(velocities, master_weights)
        result = self.fill_table(self.params, self.table, self.snapshot, states)
        if result >= 0:
            return self.table if result == 0 else NOT_WHOLE
        code = _layout.table_problem(result)[1]
        return {_layout.SETTINGS_CHANGED: SETTINGS_CHANGED,
                _layout.GRADIENT_UNFIT: NOT_WHOLE}.get(code, CHANGED)

    def positions(self, positions_in_group):
        """The members' indices in their group's parameter list (``FlatState.positions``),
        in member order (as a numpy array)."""
        if self._positions is None:
            self._positions = np.array([positions_in_group[id(p)][0] for p in self.params],
                                       dtype=np.int64)
        return self._positions


class FlatState:
    """The optimizer's buckets, by group, with what they were built from."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.buckets_of_group = {}  # id(group) (id(None) without groups) -> [bucket, ...]
        self.outside_buckets = {}  # id(group) -> the group's parameters in no bucket
        self.built_from = {}  # id(group) -> (its parameter list, its settings' structure)
        self.master_weights = None  # the optimizer's master-weight dict the buckets hold
        self.positions_of_group = {}  # id(group) -> {id(param): its indices in the group}

    def positions(self, group, params):
        """``{id(param): [its indices in params]}`` for ``group``, whose parameter list is
        ``params`` (the built one: kept until the buckets are rebuilt)."""
        if id(group) not in self.positions_of_group:
            positions = {}
            for index, param in enumerate(params):
                positions.setdefault(id(param), []).append(index)
            self.positions_of_group[id(group)] = positions
        return self.positions_of_group[id(group)]

    def built(self, group) -> bool:
        return id(group) in self.buckets_of_group

    def add_group(self, group, params, structure, buckets, outside, master_weights):
        self.buckets_of_group[id(group)] = buckets
        self.outside_buckets[id(group)] = outside
        self.built_from[id(group)] = (list(params), structure)
        self.master_weights = master_weights

    def ready(self, group, params, structure, velocities, master_weights, settings_of,
              key_of, clipped=False):
        """``([(bucket, its gradient table)] to update whole, [buckets to update member by
        member])`` for ``group``, whose parameter list is ``params`` and settings' structure
        ``structure`` now; None when the buckets must be rebuilt: the list or the structure
        changed, a member changed (``key_of(param, settings_of(param))``, its batch key now,
        differs from its bucket's), or its velocity or master weight is no longer the tensor
        in ``velocities`` or ``master_weights`` (the optimizer's dicts; the latter may have
        been replaced whole). Values change no bucket: where the group is ``clipped``, a
        member's ``need_clip`` changed is written into its row, and attribute objects that
        keep a member's key refresh the bucket's snapshot and its learning-rate scales."""
        built_params, built_structure = self.built_from[id(group)]
        if (len(params) != len(built_params) or structure != built_structure
                or not all(map(operator.is_, params, built_params))):
            return None
        whole, by_member = [], []
        for bucket in self.buckets_of_group.get(id(group), ()):
            if clipped and bucket.need_clip_changed():
                bucket.write_values(need_clips=map(_need_clip, bucket.params))
            grads = bucket.gradients(velocities, master_weights)
            if grads is SETTINGS_CHANGED:
                settings = list(map(settings_of, bucket.params))
                if any(key_of(p, s) != bucket.key for p, s in zip(bucket.params, settings)):
                    return None
                bucket.refresh_snapshot()
                bucket.write_values(lr_scales=[s.lr_scale for s in settings])
                grads = bucket.gradients(velocities, master_weights)
            if grads is CHANGED or grads is SETTINGS_CHANGED:
                return None
            if grads is NOT_WHOLE:
                by_member.append(bucket)
            else:
                whole.append((bucket, grads))
        if (whole or by_member) and master_weights is not self.master_weights:
            return None  # set_state_dict replaced the master weights
        return whole, by_member
