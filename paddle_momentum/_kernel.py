"""The fused C++ kernels (``csrc/momentum_kernel.cc`` with a rule's generated arithmetic) and
the gradient table (``csrc/gradient_table.cc``): building them (through ``_build``'s cache),
loading them, and knowing which are loaded.

A kernel is the hand-written loops of ``momentum_kernel.cc`` with one translation of a rule
spliced in (``_generate``): its cache entry is keyed on that text, so every rule, and every
edit of one, has its own entry, built once and checked once (``_selfcheck.kernel_problem``:
the kernel against the composed ops of the same rule). A process may load several: each
registers its ops under names of its own (``pm_r<digest>_momentum``, ...), but for the first
translation of the package's own rule loaded in the process, which keeps the plain names
(``pm_momentum``, ...) that saved static programs hold. :func:`ops_for` returns a
translation's ops, loading them from the cache; building them in the background, while the
caller runs the composed ops, unless told to wait.

The gradient table is one library for every rule; where it cannot be built or checked,
``gradient_table()`` warns once and returns None, and there are no flat buckets.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import pathlib
import sys
import types

import numpy as np
import paddle

from . import _build, _layout, _selfcheck, _toolchain

SOURCE = pathlib.Path(__file__).resolve().parent / "csrc" / "momentum_kernel.cc"
GRADIENT_TABLE_SOURCE = SOURCE.with_name("gradient_table.cc")
TABLE_PREFIX = "paddle_momentum_grads_"
KERNEL_PREFIX = "paddle_momentum_kernel_"
TABLE_PROBLEMS = {code: text for code, text in _layout.TABLE_PROBLEMS.values()}

# What the fallback costs, measured (bench, 2 cores): the composed ops take 8-11x the
# built-in's step time (2000 x [512]: 305 ms against 27 ms; ResNet-50 shapes: 364 against 45).
COMPOSED_COST = ("the composed Paddle ops run it instead: the same numbers, at about 8-11x "
                 "the built-in's step time")
GENERATED_MARKERS = ("// @generated attributes", "// @generated rule")

_LOADED = {}  # digest -> ops
_BUILDING = {}  # digest -> (thread, source)
_FAILED = set()  # digests whose kernel failed to build, load or check in this process
_UNCHECKED = {}  # digest -> ops loaded but not checked (the rule changed during the build)
_FINISH_AT_EXIT = []  # (registered once)
_PLAIN = []  # the digest whose ops have (or will have) the plain names: at most one


def kernel_source(generated, tag=""):
    """The kernel's source with ``generated`` (a ``_generate.Generated``) spliced in, its ops
    named ``pm_<tag>_...`` (``tag`` empty: the plain names), as a ``_build.GeneratedSource``."""
    hand_written = _hand_written()
    if tag:
        hand_written = hand_written.replace("PD_BUILD_OP(pm_", f"PD_BUILD_OP(pm_{tag}_")

    def spliced(function):
        text = hand_written
        for marker, part in zip(GENERATED_MARKERS, (generated.attributes, function)):
            at = text.index(marker)
            end = text.index("\n", at) + 1
            text = text[:end] + part + text[end:]
        return text

    # (the cache entry is keyed on the code without the generated comments, which quote the
    # rule's lines: an edit of its docstring or comments builds nothing)
    return _build.GeneratedSource(SOURCE.name, spliced(generated.function), SOURCE,
                                  f" (generated {generated.digest})",
                                  key_text=spliced(generated.code_of_function))


@functools.lru_cache(maxsize=1)
def _hand_written():
    """``momentum_kernel.cc`` as installed (read once: import and the first step both
    need it)."""
    return SOURCE.read_text()


def _tag_for(generated, plain_allowed):
    """The op names' tag of ``generated``'s kernel: the plain names for the first
    translation of the package's rule that asks (reserved for it then: a library whose ops
    Paddle has registered already aborts the process when loaded), else its digest's."""
    if plain_allowed and _PLAIN in ([], [generated.digest]):
        _PLAIN[:] = [generated.digest]
        return ""
    return f"r{generated.digest}"


def ops_for(generated, rule, wait=True, plain_allowed=False):
    """The ops of the kernel generated as ``generated`` for ``rule`` (a ``_rules.Rule``: its
    composed ops are what the new kernel is checked against), or None. Loaded from the cache
    when it holds them; else built now (``wait``), or in the background (None until built;
    the first call after that loads and checks them). ``plain_allowed``: the package's own
    rule, which takes the plain op names if no kernel has them yet. Thread-safe."""
    with _build.LOCK:
        digest = generated.digest
        ops = _LOADED.get(digest)
        if ops is not None or digest in _FAILED or not SOURCE.exists():
            return ops
        thread, source, tag = _BUILDING.get(digest) or (None, None, None)
        if source is None:
            tag = _tag_for(generated, plain_allowed)
            source = kernel_source(generated, tag)
            if not wait and not _build.loadable(source):
                thread = _start_build(source, rule)
                if thread is not None:
                    _BUILDING[digest] = (thread, source, tag)
                    return None
        elif not wait and thread.is_alive():
            return None
        elif thread.is_alive():  # (waited for: at the normal priority from now on)
            _toolchain.hurry()
        _BUILDING.pop(digest, None)
        unchecked = _UNCHECKED.pop(digest, None)
        if unchecked is not None:  # (loaded while the rule was another: checked now)
            problem = _check_against(rule, generated)(unchecked)
            if problem is _build.DEFERRED:
                _UNCHECKED[digest] = unchecked
                return None
            if problem:
                _build.warn(f"the fused momentum kernel of {rule.name} disagrees with "
                            f"{problem}; {COMPOSED_COST}")
                _FAILED.add(digest)
                return None
            _LOADED[digest] = unchecked
            return unchecked
        ops = _build.cached(source, f"fused momentum kernel of {rule.name}", KERNEL_PREFIX,
                            COMPOSED_COST, _loader(tag), _check_against(rule, generated),
                            _prebuild_table)
        if ops is None:
            _FAILED.add(digest)
            return None
        if not generated.identity.fresh():  # (its check was deferred: see _check_against)
            _UNCHECKED[digest] = ops
            return None
        _LOADED[digest] = ops
        _check_thread_count()
        return ops


def loadable(generated, plain_allowed=False) -> bool:
    """Whether the kernel of ``generated`` is loaded, or this machine's cache holds it built
    and checked (a few ms: the library is hashed), so :func:`ops_for` builds nothing."""
    with _build.LOCK:
        return generated.digest in _LOADED or (SOURCE.exists() and _build.loadable(
            kernel_source(generated, _tag_for(generated, plain_allowed))))


def _start_build(source, rule):
    """Compile ``source`` in a background thread (None where nothing can be built)."""
    _prebuild_table()
    if not _FINISH_AT_EXIT:
        _FINISH_AT_EXIT.append(atexit.register(_finish_builds))
    return _build.prebuild(source, f"fused momentum kernel of {rule.name}", KERNEL_PREFIX,
                           note="; the composed ops run the steps until it is built and checked",
                           low_priority=True)


def _finish_builds():
    """At exit: a build still running in the background finishes (into the cache, for the
    next run), rather than being cut off; Ctrl-C skips it (nothing is recorded then)."""
    running = [thread for thread, _, _ in list(_BUILDING.values()) if thread.is_alive()]
    if running:
        sys.stderr.write("paddle_momentum: finishing the kernel build started in the "
                         "background, so that the next run finds it in the cache (Ctrl-C "
                         "skips it)\n")
        for thread in running:
            thread.join()


def _loader(tag):
    """Load a kernel library whose ops are named ``pm_<tag>_...``: a namespace of its ops by
    their plain names."""
    def load(library):
        module = _build.import_ops(library)
        if not tag:
            return module
        prefix = f"pm_{tag}_"
        return types.SimpleNamespace(**{f"pm_{name[len(prefix):]}": function
                                        for name, function in vars(module).items()
                                        if name.startswith(prefix)})
    return load


def _check_against(rule, generated):
    """The kernel's check against the composed ops of ``rule`` as translated; deferred
    (``_build.DEFERRED``: not recorded either way) where the rule changed while its kernel
    was built, since its composed ops are then another rule's."""
    def check(ops):
        if not generated.identity.fresh():
            return _build.DEFERRED
        problem = _selfcheck.kernel_problem(ops, rule, rule.gradient_op_functions())
        return problem and f"the composed ops running {rule.name} itself ({problem})"
    return check


def _prebuild_table():
    """A kernel is about to be built (a first use): the gradient table compiles beside it
    (2 cores: about 15 s for both, not 30)."""
    if (GRADIENT_TABLE_SOURCE.exists()
            and os.environ.get("PADDLE_MOMENTUM_GRADIENT_TABLE", "1") != "0"):
        _build.prebuild(GRADIENT_TABLE_SOURCE, "gradient table", TABLE_PREFIX)


_THREADS_CHECKED = []


def _check_thread_count():
    """``PADDLE_MOMENTUM_NUM_THREADS`` the kernel can use: one warning where it is not a
    positive integer or more than this process's CPUs (the kernel then uses them all: more
    threads than OpenMP can start aborted the process)."""
    if _THREADS_CHECKED:
        return
    _THREADS_CHECKED.append(True)
    value = os.environ.get("PADDLE_MOMENTUM_NUM_THREADS")
    if value is None:
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads <= 0:
        _build.warn(f"PADDLE_MOMENTUM_NUM_THREADS={value!r} is not a positive integer and is "
                    "ignored")
    elif threads > (cpus or 1):
        _build.warn(f"PADDLE_MOMENTUM_NUM_THREADS={value} is more than the {cpus} CPUs this "
                    f"process may use: the fused kernel uses {cpus} threads")


def norm_reductions_exact(ops) -> bool:
    """Whether the kernel's squared norms and norm clip (``pm_squared_norms``, the
    ``max_norm`` gradient op) equal Paddle's ``squared_l2_norm`` and ``clip_by_norm`` here, bit
    for bit. They reproduce the order of the additions of Paddle's CPU reduction as its
    x86-64 wheels compile it (docs/research/norm_reductions.md): a Paddle built otherwise
    (another CPU architecture, say) keeps the norm clips out of the fused kernel. Checked
    once per process (about 2 ms; the hand-written reductions are the same in every rule's
    kernel), on lengths that take every branch of the reduction."""
    with _build.LOCK:
        return _norm_reductions_problem(ops) is None


_NORM_PROBLEM = []


def _norm_reductions_problem(ops):
    if not _NORM_PROBLEM:
        fill = gradient_table()
        if fill is None:
            return "no gradient table"
        from . import _compat

        with _compat.isolated():
            _NORM_PROBLEM.append(_selfcheck.norm_problem(ops, fill, new_gradient_table))
    return _NORM_PROBLEM[0]


def gradient_table():
    """``fill(params, table, snapshot, states=None) -> int`` (see ``csrc/gradient_table.cc``),
    or None where it cannot be built or its checks against Paddle's own accessors fail.
    ``snapshot`` is the flat list of the members' ``_settings.attribute_objects`` (or None:
    not checked); ``states`` a list of (dict, keys, state tensors) triples. None too while no
    kernel is loaded (the table serves the kernels' calls). Off with
    ``PADDLE_MOMENTUM_GRADIENT_TABLE=0``. Thread-safe; checked once per cache entry."""
    with _build.LOCK:
        return _gradient_table() if _LOADED else None


@functools.lru_cache(maxsize=None)
def _gradient_table():
    if os.environ.get("PADDLE_MOMENTUM_GRADIENT_TABLE", "1") == "0":
        return None
    return _build.cached(
        GRADIENT_TABLE_SOURCE, "gradient table", TABLE_PREFIX,
        "each parameter is updated by its own fused call (slower, same numbers)",
        _table_functions,
        _table_check)


def _table_check(fill):
    problem = _selfcheck.gradient_table_problem(fill, fill.selfcheck, new_gradient_table)
    return problem and f"Paddle's own accessors ({problem})"


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
    [TABLE_ROW_COUNT, n] on the CPU (rows: ``_layout.TABLE_ROWS``; until written, each
    member is in the call and clipped, with a learning-rate scale of 1.0, no decay and no
    state addresses)."""
    rows = np.zeros([_layout.TABLE_ROW_COUNT, len(params)], np.int64)
    layout = _layout.TABLE_ROWS
    rows[layout["PARAM_ADDRESS"]] = [p.data_ptr() for p in params]
    rows[layout["SIZE"]] = [p._numel() for p in params]
    rows[layout["DTYPE"]] = [fill.dtype_code(p) for p in params]
    rows[layout["LR_SCALE"]] = np.float64(1.0).view(np.int64)
    rows[layout["FLAGS"]] = _layout.TABLE_FLAGS["IN_CALL"] | _layout.TABLE_FLAGS["CLIPPED"]
    return paddle.to_tensor(rows, place=paddle.CPUPlace())

