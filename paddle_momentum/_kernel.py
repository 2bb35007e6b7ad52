"""The fused C++ kernel (``csrc/momentum_kernel.cc``) and the gradient table
(``csrc/gradient_table.cc``): loading them (through ``_build``'s cache) and checking them.

The kernel's source is ``momentum_kernel.cc`` with the arithmetic of ``rule.py`` spliced in,
generated now (``_generate``): its cache entry is keyed on that text, so an edited rule builds
a new entry once, and the kernel always runs the rule as it is. Each library is compiled once
per cache entry (source, flags, Paddle version, Python, compiler) and checked once, right after
its build: the kernel against the composed ops of the same rule (special values, every
option), the table against Paddle's own accessors. Where the rule holds something the
generator cannot translate, or the kernel cannot be built or fails its check,
``load()`` warns once and returns None and the optimizer uses the composed-ops
implementation. Where the gradient table cannot, ``gradient_table()`` warns once and returns
None and there are no flat buckets: each parameter is updated by its own fused call (same
numbers, the built-in's per-parameter cost; the parameters are never moved).
"""

from __future__ import annotations

import ctypes
import functools
import os
import pathlib

import numpy as np
import paddle

from . import _build, _compat, _generate, _layout, rule
from ._boundary import NO_GRADIENT_OPS, GradientOps

SOURCE = pathlib.Path(__file__).resolve().parent / "csrc" / "momentum_kernel.cc"
GRADIENT_TABLE_SOURCE = SOURCE.with_name("gradient_table.cc")
TABLE_PREFIX = "paddle_momentum_grads_"


def load():
    """The compiled extension module (ops ``pm_momentum``, ``pm_momentum_master``,
    ``pm_momentum_multi``, ``pm_momentum_multi_master``, ``pm_momentum_table``,
    ``pm_momentum_table_master``) or None. Thread-safe; built and checked once per cache
    entry (``_build``)."""
    with _build.LOCK:
        return _load()


def load_if_built():
    """``load()`` when this machine's cache already holds the kernel, built and checked (a few
    ms: the library is hashed and loaded), else None without building anything. Run at
    import, so that a saved static program with our ops runs in a new process."""
    with _build.LOCK:
        cxx = _build.compiler()
        source = kernel_source()[0] if SOURCE.exists() else None
        if (cxx is None or source is None
                or _build.verified_library(_build.cache_entry(source, cxx)) is None):
            return None
        return _load()


# What the fallback costs, measured (bench, 2 cores): the composed ops take 8-11x the
# built-in's step time (2000 x [512]: 305 ms against 27 ms; ResNet-50 shapes: 364 against 45).
COMPOSED_COST = ("using the composed ops instead: the same numbers, but about 8-11x the "
                 "built-in's step time")
FALLBACK = (f"{COMPOSED_COST}; a C++ compiler (g++ or clang++) and the Python development "
            "headers give the fused kernel")
GENERATED_MARKERS = ("// @generated attributes", "// @generated rule")


_GENERATED_FROM = []  # the rule function the loaded kernel was generated from


def runs_current_rule() -> bool:
    """Whether the loaded kernel runs ``rule.py``'s functions as they are now: False after one
    was replaced in this process (a monkeypatch, a reload), which the composed ops then run
    (one warning). Checked once per step: identity tests."""
    if not _GENERATED_FROM:
        return True
    functions = _generate.rule_functions()
    if all(a is b for a, b in zip(_GENERATED_FROM[0], functions)):
        return True
    if len(_GENERATED_FROM) == 1:
        _GENERATED_FROM.append(None)
        replaced = [f"rule.{a.__name__}" for a, b in zip(_GENERATED_FROM[0], functions)
                    if a is not b]
        _build.warn(f"{', '.join(replaced)} was replaced after the fused kernel was built "
                    "from it: the composed ops run the new rule in this process (a new "
                    f"process builds a kernel for it); {FALLBACK}")
    return False


def kernel_source():
    """``(source, None)``: the kernel's source with the rule's generated arithmetic (a
    ``_build.GeneratedSource``), or ``(None, why)`` when the rule cannot be generated.
    Generated once per set of rule functions (import asks, then the first load)."""
    return _source_for(_generate.rule_functions())


@functools.lru_cache(maxsize=4)
def _source_for(functions):
    try:
        generated = _generate.generate(functions)
    except _generate.CannotGenerate as error:
        return None, str(error)
    text = SOURCE.read_text()
    for marker, part in zip(GENERATED_MARKERS, (generated.attributes, generated.function)):
        at = text.index(marker)
        end = text.index("\n", at) + 1
        text = text[:end] + part + text[end:]
    note = f" (the arithmetic of {_generate.rule.__file__}, generated {generated.digest})"
    source = _build.GeneratedSource(SOURCE.name, text, SOURCE, note)
    source.functions = functions  # (what runs_current_rule compares with)
    return source, None


@functools.lru_cache(maxsize=None)
def _load():
    if not SOURCE.exists():
        return _build.cached(SOURCE, "fused momentum kernel", "paddle_momentum_kernel_",
                             FALLBACK, _build.import_ops)  # (warns: an incomplete install)
    source, why = kernel_source()
    if source is None:
        _build.warn(f"the fused kernel cannot run rule.py as it is ({why}); {COMPOSED_COST}"
                    "; written with the operations docs/change_the_rule.md lists, the rule "
                    "runs in the fused kernel")
        return None
    _GENERATED_FROM[:] = [source.functions]
    return _build.cached(source, "fused momentum kernel", "paddle_momentum_kernel_",
                         FALLBACK, _build.import_ops, _kernel_problem, _prebuild_table)


def _prebuild_table():
    """The kernel is about to be built (a first use): the gradient table compiles beside it
    (2 cores: about 15 s for both, not 30)."""
    if (GRADIENT_TABLE_SOURCE.exists()
            and os.environ.get("PADDLE_MOMENTUM_GRADIENT_TABLE", "1") != "0"):
        _build.prebuild(GRADIENT_TABLE_SOURCE, "gradient table", TABLE_PREFIX)


# The self-check's cases: (dtype, rule options, first_step). Every branch of the rule as
# written today, the low-precision rounding, and each setting declared later off its default.
_OPTION_CASES = (
    ({}, False), ({"use_nesterov": True}, False), ({"l2_coeff": 0.01}, False),
    ({"use_nesterov": True, "l2_coeff": 0.0}, False), ({"rescale_grad": 2.0}, False),
    ({"momentum": 0.0, "l2_coeff": 0.01}, False), ({"maximize": True}, False),
    ({"dampening": 0.3}, True), ({"dampening": 0.3, "l2_coeff": 0.01}, False),
    ({"dampening": 0.3, "momentum": 0.0}, False), ({"decoupled_weight_decay": 0.01}, False),
    ({"maximize": True, "rescale_grad": 0.5, "decoupled_weight_decay": 0.1,
      "use_nesterov": True, "l2_coeff": 0.02}, False))


def _check_cases():
    from ._settings import RULE_SETTINGS

    listed = {name for options, _ in _OPTION_CASES for name in options}
    cases = list(_OPTION_CASES)
    for setting in RULE_SETTINGS:  # (a setting added since: off its default, alone)
        if setting.name not in listed:
            value = True if isinstance(setting.default, bool) else 0.3
            try:
                setting.check(value, setting.name)
            except (TypeError, ValueError):
                continue
            cases.append(({setting.name: value}, False))
    return ([(dtype, options, first, NO_GRADIENT_OPS) for dtype in ("float32", "float64")
             for options, first in cases]
            + [(dtype, options, False, gradient_ops) for dtype in ("float32", "float64")
               for options, gradient_ops in _GRADIENT_OP_CASES]
            + [("float16", {"use_nesterov": True, "l2_coeff": 0.01}, False, NO_GRADIENT_OPS),
               ("float16", {}, False, NO_GRADIENT_OPS)])  # (no float16 sign or clip on CPU)


# ... and the gradient ops generated from rule.py (the clip's and the L1 term's).
_GRADIENT_OP_CASES = (
    ({}, GradientOps(clip_min=-1.0, clip_max=1.0)), ({}, GradientOps(l1=0.01)),
    ({"use_nesterov": True, "l2_coeff": 0.01}, GradientOps(clip_min=-0.5, clip_max=2.0,
                                                           l1=-0.25)))


def _composed_gradient_ops(param, grad, gradient_ops):
    """The gradient ops through rule.py's functions, in the built-in's order (clip, then
    the regularizer's term)."""
    if gradient_ops.clip_min is not None:
        grad = rule.clip_by_value(grad, gradient_ops.clip_min, gradient_ops.clip_max)
    if gradient_ops.l1 is not None:
        grad = rule.l1_decay(param, grad, gradient_ops.l1)
    return grad


def _special_grid(dtype):
    """``(param, grad, velocity)``: every combination of zeros of both signs, numbers, a
    denormal, infinities and NaNs of both signs (distinct payloads) in the three."""
    if dtype == "float16":
        values = np.array([0.0, -0.0, 1.0, -1.5, 6e-8, np.inf, -np.inf, np.nan, -np.nan,
                           1000.0], "float16")
    else:
        bits_type = np.uint32 if dtype == "float32" else np.uint64
        nans = np.array([0x7FC00011, 0xFFC00022] if dtype == "float32" else
                        [0x7FF8000000000011, 0xFFF8000000000022], bits_type).view(dtype)
        tiny = np.finfo(dtype).tiny / 4
        values = np.array([0.0, -0.0, 1.0, -1.5, tiny, -tiny, np.inf, -np.inf, 3e4],
                          dtype)
        values = np.concatenate([values, nans])
    return [axis.ravel().copy() for axis in np.meshgrid(values, values, values,
                                                        indexing="ij")]


def _kernel_problem(ops):
    """The first case where one kernel step differs from the composed ops of the same rule
    (``rule.py`` through Paddle's ops: the reference the kernel is generated to equal), bit
    for bit, or None."""
    from . import implementations
    from ._boundary import kernel_attributes
    from ._settings import rule_options

    with _compat.isolated():
        for dtype, values, first_step, gradient_ops in _check_cases():
            options = rule_options(**values)
            param, grad, velocity = _special_grid(dtype)
            lr = np.array([0.1], "float32" if dtype == "float16" else dtype)
            results = []
            for run in ("kernel", "composed"):
                tensors = [paddle.to_tensor(a) for a in (param, grad, velocity, lr)]
                if run == "kernel":
                    ops.pm_momentum(*tensors, **kernel_attributes(options, gradient_ops,
                                                                  first_step=first_step))
                else:
                    clipped = _composed_gradient_ops(tensors[0], tensors[1], gradient_ops)
                    implementations.composed(tensors[0], clipped, tensors[2], None, tensors[3],
                                             first_step=first_step, **options)
                results.append([tensors[0].numpy(), tensors[2].numpy()])
            # Which NaN add_n keeps where the L1 term meets a NaN gradient is a property of
            # each Paddle release's binary: the kernel reproduces 3.3.1's (AddNKeepsFirst,
            # docs/research/nan_bits.md), and the check does not hold other releases to it.
            unmodelled = (np.isnan(param) & np.isnan(grad) if gradient_ops.l1 is not None
                          else np.zeros(param.shape, bool))
            for name, got, wanted in zip(("param", "velocity"), *results):
                bits_type = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.itemsize]
                differ = np.flatnonzero((got.view(bits_type) != wanted.view(bits_type))
                                        & ~unmodelled)
                if differ.size:
                    i = differ[0]
                    ops_note = "" if gradient_ops == NO_GRADIENT_OPS else f" {gradient_ops}"
                    return (f"{dtype} {values or 'defaults'}{ops_note} first_step={first_step}: "
                            f"{name} at p={_shown(param[i])}, g={_shown(grad[i])}, "
                            f"v={_shown(velocity[i])}: kernel {_shown(got[i])}, composed "
                            f"{_shown(wanted[i])}")
    return None


def _shown(value):
    """A value of the self-check, with its bits where they say more (a NaN, a zero)."""
    value = np.asarray(value)
    bits = value.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[value.itemsize])
    text = repr(value.item())
    return f"{text} ({int(bits):#x})" if np.isnan(value) or value == 0 else text


def norm_reductions_exact() -> bool:
    """Whether the kernel's squared norms and norm clip (``pm_squared_norms``, the
    ``max_norm`` gradient op) equal Paddle's ``squared_l2_norm`` and ``clip_by_norm`` here, bit
    for bit. They reproduce the order of the additions of Paddle's CPU reduction as its
    x86-64 wheels compile it (docs/research/norm_reductions.md): a Paddle built otherwise
    (another CPU architecture, say) keeps the norm clips out of the fused kernel. Checked
    once per process (about 2 ms), on lengths that take every branch of the reduction."""
    with _build.LOCK:
        return _norm_reductions_problem() is None


@functools.lru_cache(maxsize=None)
def _norm_reductions_problem():
    fill = gradient_table()
    if fill is None:
        return "no gradient table"
    with _compat.isolated():
        return _norm_disagreement(load(), fill)


def _norm_disagreement(ops, fill):
    from paddle import _C_ops

    from ._boundary import GradientOps, kernel_attributes
    from ._settings import rule_options

    lengths = (1, 7, 8, 17, 1000, 8191, 8193, 40000, 65539)
    for dtype in ("float32", "float64"):
        values = np.random.RandomState(7).standard_normal(sum(lengths)) * 10.0 ** (
            np.arange(sum(lengths)) % 7 - 3)
        grads = [paddle.to_tensor(part.astype(dtype))
                 for part in np.split(values, np.cumsum(lengths)[:-1])]
        params = [paddle.zeros([n], dtype) for n in lengths]
        table = new_gradient_table(params, fill)
        table[_layout.TABLE_ROWS["GRAD_ADDRESS"]] = paddle.to_tensor(
            [g.data_ptr() for g in grads], dtype="int64")
        norms = paddle.empty([len(lengths)], dtype)
        ops.pm_squared_norms(table, norms)
        wanted = [_C_ops.squared_l2_norm(g).numpy()[0] for g in grads]
        if norms.numpy().tolist() != wanted:
            return f"{dtype} squared norms {norms.numpy().tolist()}, Paddle's {wanted}"
        if dtype == "float64":  # (Paddle's clip_by_norm has no float64 CPU kernel)
            continue
        # lr 1, momentum 0, zero parameters: the update leaves -clip_by_norm(g) in each.
        max_norm = float(np.sqrt(wanted[4]))  # one gradient exactly at the limit
        velocities = [paddle.zeros([n], dtype) for n in lengths]
        ops.pm_momentum_table(table, velocities, paddle.to_tensor([1.0], dtype), dtype,
                              **kernel_attributes(rule_options(momentum=0.0),
                                                  GradientOps(max_norm=max_norm)))
        for param, grad in zip(params, grads):
            if not np.array_equal(-param.numpy(), _C_ops.clip_by_norm(grad, max_norm).numpy()):
                return f"{dtype} clip_by_norm of {grad.shape[0]} elements"
    return None


# What the gradient table reports for member i's problem: -(PROBLEM_STRIDE * i + code).
TABLE_PROBLEMS = {code: text for code, text in _layout.TABLE_PROBLEMS.values()}
GRADIENT_UNFIT = _layout.TABLE_PROBLEMS["GRAD"][0]
SETTINGS_CHANGED = _layout.TABLE_PROBLEMS["SETTINGS"][0]


def table_problem(code: int):
    """``(member index, problem code)`` of a negative table result."""
    return (-code) // _layout.PROBLEM_STRIDE, (-code) % _layout.PROBLEM_STRIDE


def gradient_table():
    """``fill(params, table, snapshot, states=None) -> int`` (see ``csrc/gradient_table.cc``),
    or None where it cannot be built or its checks against Paddle's own accessors fail.
    ``snapshot`` is the flat list of the members' ``_settings.attribute_objects`` (or None:
    not checked); ``states`` a list of (dict, keys, state tensors) triples. Off
    with ``PADDLE_MOMENTUM_GRADIENT_TABLE=0``. Thread-safe; checked once per cache entry."""
    with _build.LOCK:
        return _gradient_table()


@functools.lru_cache(maxsize=None)
def _gradient_table():
    if os.environ.get("PADDLE_MOMENTUM_GRADIENT_TABLE", "1") == "0" or load() is None:
        return None
    return _build.cached(
        GRADIENT_TABLE_SOURCE, "gradient table", TABLE_PREFIX,
        "each parameter is updated by its own fused call (slower, same numbers)",
        _table_functions, lambda fill: _gradient_table_problem(fill, fill.selfcheck))


gradient_table.cache_clear = _gradient_table.cache_clear


def _table_functions(library):
    """The table's ``fill`` function from its library (``ctypes``, with the GIL held)."""
    library = ctypes.PyDLL(str(library))
    for function in (library.pm_gradient_table, library.pm_gradient_table_selfcheck,
                     library.pm_tensor_dtype):
        function.restype = ctypes.c_int64
    library.pm_gradient_table.argtypes = [ctypes.py_object] * 5
    library.pm_gradient_table_selfcheck.argtypes = [ctypes.py_object]
    library.pm_tensor_dtype.argtypes = [ctypes.py_object]
    stop_gradient = paddle.Tensor.__dict__["stop_gradient"]

    def fill(params, table, snapshot, states=None) -> int:
        return library.pm_gradient_table(params, table, stop_gradient, snapshot, states)

    fill.dtype_code = library.pm_tensor_dtype
    fill.selfcheck = library.pm_gradient_table_selfcheck
    return fill


def new_gradient_table(params, fill):
    """The table ``fill`` (from ``gradient_table()``) fills for ``params``: int64
    [TABLE_ROW_COUNT, n] on the CPU (rows: ``_layout.TABLE_ROWS``; each member's
    learning-rate scale 1.0 and clip flag 1 until written)."""
    rows = np.zeros([_layout.TABLE_ROW_COUNT, len(params)], np.int64)
    layout = _layout.TABLE_ROWS
    rows[layout["PARAM_ADDRESS"]] = [p.data_ptr() for p in params]
    rows[layout["SIZE"]] = [p._numel() for p in params]
    rows[layout["DTYPE"]] = [fill.dtype_code(p) for p in params]
    rows[layout["LR_SCALE"]] = np.float64(1.0).view(np.int64)
    rows[layout["CLIPPED"]] = 1
    return paddle.to_tensor(rows, place=paddle.CPUPlace())


def _gradient_table_problem(fill, selfcheck):
    """What differs between the table and Paddle's own accessors on a few tensors (with a
    gradient, without one, frozen, 2-D, with a regularizer changed), or None. The tensors
    need no initializer: checking draws nothing from Paddle's random generator."""
    with _compat.isolated():
        return _table_disagreement(fill, selfcheck)


def _table_disagreement(fill, selfcheck):
    from ._settings import attribute_objects

    params = [paddle.zeros(shape, "float32") for shape in ([3], [2, 2], [5], [1])]
    for param in params:
        param.stop_gradient = False
    params[1].optimize_attr = {"learning_rate": 0.5}
    with paddle.set_grad_enabled(True):  # the first bucket is built inside a no_grad step()
        paddle.add_n([p.sum() for p in params[:3]]).backward()
    params[2].stop_gradient = True
    if any(selfcheck(p) != 1 for p in params):
        return "tensor object layout"
    table = new_gradient_table(params, fill)
    snapshot = [obj for p in params for obj in attribute_objects(p)]
    without_gradient = fill(params, table, snapshot)
    if without_gradient != 2:
        return f"missing-gradient count {without_gradient}"
    wanted = [0 if g is None else g.data_ptr() for g in _compat.all_gradients(params)]
    if table.numpy()[2].tolist() != wanted:
        return "gradient addresses"
    params[1].optimize_attr["learning_rate"] = 0.25  # a plain number: taken into its row
    params[3].regularizer = paddle.regularizer.L1Decay(0.1)
    if table_problem(fill(params, table, snapshot)) != (3, SETTINGS_CHANGED):
        return "changed regularizer not seen"
    scales = table.numpy()[_layout.TABLE_ROWS["LR_SCALE"]].view(np.float64).tolist()
    if scales != [1.0, 0.25, 1.0, 1.0] or snapshot[3 * 1] is not \
            params[1].optimize_attr["learning_rate"]:
        return "changed learning-rate scale not taken"
    params[1].optimize_attr["learning_rate"] = np.float64(0.5)  # not plain: Python decides
    if table_problem(fill(params, table, snapshot)) != (1, SETTINGS_CHANGED):
        return "changed learning-rate scale not seen"
    snapshot[3 * 1] = params[1].optimize_attr["learning_rate"]
    if table_problem(fill(params, table, snapshot)) != (3, SETTINGS_CHANGED):
        return "changed regularizer not seen"
    snapshot[3 * 3 + 1] = params[3].regularizer
    table[3, 0] = fill.dtype_code(paddle.zeros([1], "float64"))
    if table_problem(fill(params, table, snapshot)) != (0, 2):
        return "changed dtype not seen"
    return None
