"""Crash-safe checkpoints of a model and its optimizer.

``save`` never leaves a torn file behind: it serialises into memory, writes a temporary file
in the same directory, flushes and fsyncs it, renames it over ``path`` (atomic on POSIX) and
fsyncs the directory. A process killed at any moment leaves either the previous checkpoint or
the new one, both complete.

    from paddle_momentum import checkpoint
    checkpoint.save("run/last.ckpt", model, optimizer, step=step)
    ...
    extra = checkpoint.load("run/last.ckpt", model, optimizer)   # {"step": step}

The optimizer state is the state dict (velocities, master weights, LR scheduler), so a
checkpoint written with ``paddle_momentum.Momentum`` also loads into
``paddle.optimizer.Momentum`` and the other way round. Anything else training needs to resume
exactly (the data position, random states) goes into ``extra``.
"""

from __future__ import annotations

import io
import os
import tempfile

import paddle


def save(path, model, optimizer, **extra) -> None:
    """Atomically write ``model``'s and ``optimizer``'s state and ``extra`` values to ``path``
    (its directory created if needed)."""
    buffer = io.BytesIO()
    paddle.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "extra": extra}, buffer)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)  # (as paddle.save does)
    descriptor, temporary = tempfile.mkstemp(prefix=".checkpoint-", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def load(path, model, optimizer) -> dict:
    """Restore ``model`` and ``optimizer`` from ``path``; returns the ``extra`` values."""
    state = paddle.load(os.fspath(path))
    model.set_state_dict(state["model"])
    optimizer.set_state_dict(state["optimizer"])
    return state["extra"]


def _fsync_directory(directory) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
