"""Flat buffers: many parameters updated by one fused-kernel call (dygraph, CPU).

Parameters that share every update setting (dtype, master weight or not, momentum, Nesterov,
rescale_grad, fused L2 coefficient, learning-rate scale) are moved into one contiguous buffer
per kind of state: parameters, gradients, velocities and master weights. Each parameter,
gradient, velocity and master weight becomes a view of its buffer (the same Python objects,
their storage shared), so ``forward``, ``backward`` (which accumulates into the gradient
views), ``set_value``, ``state_dict`` and checkpoints keep working unchanged, and one kernel
call updates the whole bucket: the per-parameter cost of a step disappears.

Anything that replaces a view's storage is detected with a pointer comparison per parameter
before every step: a replaced gradient (``clear_grad(set_to_zero=False)``, a fresh backward)
sends that bucket through the per-parameter path for the step and is linked back afterwards;
a replaced parameter or master weight (``Layer.to``, ``set_state_dict`` of master weights)
makes the optimizer rebuild its buckets.
"""

from __future__ import annotations

import operator

import paddle

from . import _compat

# Parameters of at least this many elements get a bucket of their own (no copy, no extra
# memory): their update dwarfs the per-parameter overhead that gathering saves.
OWN_BUCKET_SIZE = 1 << 16

_STOP_GRADIENT = operator.attrgetter("stop_gradient")
_DATA_PTR = paddle.Tensor.data_ptr
_GRADIENT = paddle.Tensor._grad_ivar


def _concat_flat(tensors):
    return paddle.concat([t.detach().reshape([-1]) for t in tensors])


def _views(flat, tensors):
    views, offset = [], 0
    for tensor in tensors:
        size = int(tensor.size)
        views.append(flat._slice(offset, offset + size).reshape(tensor.shape))
        offset += size
    return views


class FlatBucket:
    """Parameters with identical update settings, their state in contiguous buffers.

    A bucket of one parameter needs no copy: its own tensors are the buffers. The optimizer
    gives large parameters a bucket each (no extra memory at all) and gathers the small ones,
    where the per-parameter overhead dominates, into shared buffers.
    """

    def __init__(self, key, params, grads, velocities, masters):
        self.key = key
        self.params = params
        if len(params) == 1:
            self.param_flat, self.grad_flat, self.velocity_flat = params[0], grads[0], \
                velocities[0]
            self.master_flat = masters[0] if masters else None
            self.grad_views = [grads[0]]
        else:
            self._gather(params, grads, velocities, masters)
        self.param_ptrs = [p.data_ptr() for p in params]
        self.grad_ptrs = [g.data_ptr() for g in self.grad_views]

    def _gather(self, params, grads, velocities, masters):
        """Copy the state into new buffers and make every tensor a view of its buffer."""
        with paddle.no_grad():
            self.param_flat = _concat_flat(params)
            self.grad_flat = _concat_flat(grads)
            self.velocity_flat = _concat_flat(velocities)
            self.master_flat = _concat_flat(masters) if masters else None
            for view, param in zip(_views(self.param_flat, params), params):
                view._share_buffer_to(param)
            for view, velocity in zip(_views(self.velocity_flat, velocities), velocities):
                view._share_buffer_to(velocity)
            if masters:
                for view, master in zip(_views(self.master_flat, masters), masters):
                    view._share_buffer_to(master)
            self.grad_views = _views(self.grad_flat, grads)
            for view, param in zip(self.grad_views, params):
                param._copy_gradient_from(view)

    def intact(self) -> bool:
        """Every member is trainable, still lives in the parameter buffer, and its gradient is
        its view of the gradient buffer: then one kernel call is the whole update."""
        if not self.grad_flat._is_initialized():
            # clear_grad(set_to_zero=False) released a bucket-of-one's own gradient: its
            # address may come back for the next gradient, so pointers alone cannot tell.
            return False
        # map() over unbound methods: the per-parameter checks run without Python bytecode
        params = self.params
        if any(map(_STOP_GRADIENT, params)) or list(map(_DATA_PTR, params)) != self.param_ptrs:
            return False
        try:
            return list(map(_DATA_PTR, map(_GRADIENT, params))) == self.grad_ptrs
        except (TypeError, AttributeError):  # a member has no gradient (None)
            return False

    def storage_intact(self) -> bool:
        """Parameters still live in the parameter buffer (False: the buckets must be rebuilt)."""
        return all(p.data_ptr() == ptr for p, ptr in zip(self.params, self.param_ptrs))

    def relink_gradients(self):
        """Make gradients views of the buffer again, keeping their current values (a bucket of
        one adopts the new gradient instead)."""
        if len(self.params) == 1:
            grad = self.params[0]._grad_ivar()
            if grad is not None:
                self.grad_flat = grad
                self.grad_views, self.grad_ptrs = [grad], [grad.data_ptr()]
            return
        with paddle.no_grad():
            for param, view, ptr in zip(self.params, self.grad_views, self.grad_ptrs):
                grad = param._grad_ivar()
                if grad is not None and grad.data_ptr() != ptr:
                    _compat.write_into(view, grad)
                    param._copy_gradient_from(view)


class FlatState:
    """The optimizer's buckets, by group."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.buckets_of_group = {}  # id(group) (id(None) without groups) -> [bucket, ...]
        self.outside_buckets = {}  # id(group) -> the group's parameters in no bucket
        self.master_weights = None  # the optimizer's master-weight dict the buckets hold

    def built(self, group) -> bool:
        return id(group) in self.buckets_of_group

    def add_group(self, group, buckets, outside, master_weights):
        self.buckets_of_group[id(group)] = buckets
        self.outside_buckets[id(group)] = outside
        self.master_weights = master_weights

    def ready(self, group, master_weights):
        """``(intact buckets, buckets to update one by one and relink)`` of ``group``; None
        when a parameter's storage or the master-weight dict was replaced (rebuild)."""
        intact, broken = [], []
        for bucket in self.buckets_of_group.get(id(group), ()):
            if bucket.intact():
                intact.append(bucket)
            elif bucket.storage_intact():
                broken.append(bucket)
            else:
                return None
        if (intact or broken) and master_weights is not self.master_weights:
            return None  # set_state_dict replaced the master weights
        return intact, broken
