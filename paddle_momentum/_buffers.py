"""Contiguous CPU buffers that hold many tensors' data, each tensor a view of its part.

A flat bucket (``_flat``) moves its small members' state into one buffer per kind; the state
tensors stay the same Python objects (their storage shared with the buffer), so the
optimizer's dicts, ``state_dict`` and checkpoints see nothing.
"""

from __future__ import annotations

import ctypes

import paddle

from . import _compat


def recording(state_of, states):
    """``state_of`` that also appends each state it returns to ``states``."""
    def recorded(param):
        state = state_of(param)
        states.append(state)
        return state
    return recorded


def gather(tensors, sizes):
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
    consecutive views of the CPU buffer ``flat`` (their data shared, as in :func:`gather`),
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
