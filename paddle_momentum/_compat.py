"""Everything that differs between Paddle's execution modes and versions, in one place.

The optimizer and the update rule call these named helpers instead of branching on
dygraph / PIR / legacy IR inline.
"""

from __future__ import annotations

import contextlib
import inspect

import paddle
from paddle.base import framework

# The variable type of a dense tensor (LOD_TENSOR in older Paddle releases).
DENSE_TENSOR = getattr(framework.core.VarDesc.VarType, "DENSE_TENSOR", None) or \
    framework.core.VarDesc.VarType.LOD_TENSOR


def proto_dtype(dtype):
    """``dtype`` as the ``VarDesc.VarType`` a ``Tensor(dtype, shape, name, type,
    persistable)`` constructor takes."""
    convert = getattr(framework, "convert_to_proto_type", None) or \
        framework.convert_np_dtype_to_dtype_
    return convert(dtype)


LOW_PRECISION_DTYPES = ("float16", "bfloat16")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def in_dygraph() -> bool:
    return framework.in_dygraph_mode()


def in_pir() -> bool:
    return framework.in_pir_mode()


def in_legacy_static() -> bool:
    """Static graph under the legacy IR (``OldIrGuard`` or ``FLAGS_enable_pir_api=0``)."""
    return not in_dygraph() and not in_pir()


def in_to_static() -> bool:
    """True while ``paddle.jit.to_static`` traces a dygraph function into a program."""
    return paddle.base.dygraph.base.in_to_static_mode()


_DTYPE_NAMES = {}


def dtype_name(dtype) -> str:
    """'float32' etc. for a dygraph/PIR ``DataType`` and a legacy-IR ``VarType`` alike."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:  # str() of a dtype runs Python code in Paddle: remember the answer
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("paddle.", "")
    return name


def is_low_precision(dtype) -> bool:
    return dtype_name(dtype) in LOW_PRECISION_DTYPES


def is_float_dtype(dtype) -> bool:
    return dtype_name(dtype) in FLOAT_DTYPES


def is_tensor(value) -> bool:
    if type(value) in (float, int, bool, type(None)):  # (Variable's isinstance is slow)
        return False
    return isinstance(value, (paddle.Tensor, framework.Variable, paddle.pir.Value))


def cast(tensor, dtype):
    """``tensor`` in ``dtype``; the same tensor (no op) when it already has that dtype."""
    return tensor if dtype_name(tensor.dtype) == dtype_name(dtype) else paddle.cast(tensor, dtype)


def round_through(dtype):
    """A function that rounds a float32 tensor to ``dtype`` and back (emulated narrow arithmetic)."""

    def rounded(tensor):
        return paddle.cast(paddle.cast(tensor, dtype), tensor.dtype)

    return rounded


def write_into(target, value) -> None:
    """Store ``value`` into ``target`` in place (dygraph: same storage; static: an assign op).

    Dygraph calls the op directly: ``paddle.assign`` draws a name from Paddle's global
    unique-name counters on every call, which the built-in optimizer's step never does."""
    if in_dygraph():
        paddle._C_ops.assign_out_(value, target)
    else:
        paddle.assign(value, output=target)


_GLOBAL_FLAGS = paddle.base.core.globals()
_OPERANTS_MODE = "FLAGS_tensor_operants_mode"


@contextlib.contextmanager
def flags_kept():
    """Put back the Paddle flag that running a custom operator in dygraph changes (Paddle's
    custom-op runner sets ``FLAGS_tensor_operants_mode`` to 'phi' and never resets it).
    About 2 us."""
    mode = _GLOBAL_FLAGS[_OPERANTS_MODE]
    try:
        yield
    finally:
        if _GLOBAL_FLAGS[_OPERANTS_MODE] != mode:
            _GLOBAL_FLAGS[_OPERANTS_MODE] = mode


def flags_as_after_eager_ops():
    """Leave Paddle's flags as its own eager ops leave them: each sets
    ``FLAGS_tensor_operants_mode`` to 'eager' (so the built-in's step, made of eager ops,
    leaves 'eager'), where our custom ops leave 'phi'. Called after a step that updated
    something."""
    if _GLOBAL_FLAGS[_OPERANTS_MODE] != "eager":
        _GLOBAL_FLAGS[_OPERANTS_MODE] = "eager"


@contextlib.contextmanager
def isolated():
    """Run internal work (probes, checks) in dygraph mode without a trace in Paddle's global
    state: names are drawn from a private unique-name generator, the random generators'
    states are put back afterwards, and a static-graph mode is restored."""
    generators = [paddle.base.core.default_cpu_generator()]
    if paddle.is_compiled_with_cuda():
        generators += [paddle.base.core.default_cuda_generator(i)
                       for i in range(paddle.device.cuda.device_count())]
    states = [generator.get_state() for generator in generators]
    mode = contextlib.nullcontext() if in_dygraph() else paddle.base.dygraph.guard()
    try:
        with paddle.utils.unique_name.guard(), mode, flags_kept():
            yield
    finally:
        for generator, state in zip(generators, states):
            generator.set_state(state)


def inplace_target(tensor):
    """What an in-place custom op may write into for ``tensor``: the tensor itself in a static
    program; in dygraph ``tensor.detach()``, which shares its storage. Dygraph refuses in-place
    ops on a leaf that requires grad, and on a tensor with autograd history the custom-op call
    costs milliseconds more (measured: 8 ms against 0.15 ms for 1M elements)."""
    return tensor.detach() if in_dygraph() else tensor


def program_of(value):
    """The static program a legacy Variable or PIR Value belongs to."""
    if in_pir():
        return value.get_defining_op().get_parent_block().program
    return value.block.program


def optimizer_role(program):
    """Marks ops appended inside as optimizer ops (legacy IR; a no-op under PIR, which has no
    roles)."""
    if in_legacy_static():
        return program._optimized_guard([])
    return contextlib.nullcontext()


def optimizer_ops_guard(params_grads):
    """Marks ops appended inside as optimizer ops (the legacy IR's op role); a no-op elsewhere."""
    if in_legacy_static():
        return params_grads[0][0].block.program._optimized_guard(
            [t for pair in params_grads for t in pair])
    return contextlib.nullcontext()


# The gradients of a list of parameters in one C++ call: None for a parameter that has no
# gradient or does not require one (the built-in's minimize() collects them with it too).
all_gradients = paddle.base.core.eager.get_all_grads


def on_cpu(tensor) -> bool:
    """Whether ``tensor`` lives on the CPU (static programs: the current device)."""
    if in_dygraph():
        return tensor.place.is_cpu_place()
    return paddle.get_device() == "cpu"


def _step_reads_main_grad() -> bool:
    """Whether this release's ``Optimizer.step()`` takes a parameter's ``main_grad`` (3.2
    does, 3.0 does not): read from its source, so that ours follows the release it runs on."""
    try:
        return "main_grad" in inspect.getsource(paddle.optimizer.Optimizer.step)
    except (OSError, TypeError):  # no source installed: the newer behaviour
        return True


STEP_READS_MAIN_GRAD = _step_reads_main_grad()


def gradient_of(param, use_main_grad=True):
    """The gradient the built-in's ``step()`` uses: ``main_grad`` when set (and
    ``use_main_grad``: the built-in ignores it in parameter groups, and release 3.0
    everywhere: ``STEP_READS_MAIN_GRAD``), else ``.grad``."""
    main_grad = (getattr(param, "main_grad", None)
                 if use_main_grad and STEP_READS_MAIN_GRAD else None)
    return param._grad_ivar() if main_grad is None else main_grad


def is_sparse(grad) -> bool:
    """A SelectedRows gradient (a dygraph tensor, or a legacy-IR program's variable)."""
    if in_legacy_static() and isinstance(grad, paddle.static.Variable):
        return grad.type == paddle.base.core.VarDesc.VarType.SELECTED_ROWS
    return hasattr(grad, "is_selected_rows") and grad.is_selected_rows()


def dense_gradient(grad, param):
    """A SelectedRows gradient (``Embedding(sparse=True)``) as a dense tensor of ``param``'s
    shape: duplicate rows summed by Paddle's own merge (as the built-in's sparse kernel
    does), rows without a gradient zero. In a legacy-IR program: Paddle's ``sum`` op of a
    zero tensor and the rows (a row's terms added to zero in order: -0.0 sums become +0.0
    there, the only difference from the merge)."""
    if in_legacy_static():
        from paddle.base.layer_helper import LayerHelper

        helper = LayerHelper("dense_gradient")
        zeros = paddle.zeros(param.shape, dtype=param.dtype)
        dense = helper.create_variable_for_type_inference(param.dtype)
        helper.append_op(type="sum", inputs={"X": [zeros, grad]}, outputs={"Out": dense})
        return dense
    merged = paddle._C_ops.merge_selected_rows(grad)
    rows = paddle.to_tensor(merged.rows(), dtype="int64", place=param.place)
    values = merged._get_tensor_from_selected_rows()
    zeros = paddle.zeros(param.shape, dtype=values.dtype)
    return paddle.scatter(zeros, rows, values, overwrite=True)


def default_block(tensor):
    """The block a regularizer builds its ops in (dygraph tensors report the default one)."""
    return tensor.block
