"""Building, caching and loading the fused C++ kernel (``csrc/momentum_kernel.cc``) and the
gradient table (``csrc/gradient_table.cc``).

Each is compiled once per (source, Paddle version, Python) with Paddle's JIT extension builder
and cached under ``$PADDLE_MOMENTUM_CACHE`` (default ``~/.cache/paddle_momentum``). Where the
kernel cannot be built (no C++ compiler, say), ``load()`` warns once and returns None and the
optimizer uses the composed-ops implementation. Where the gradient table cannot be built or
fails its checks, ``gradient_table()`` warns once and returns None and flat buckets pass their
gradients to the kernel as a tensor list (same numbers, about 2 ms slower per 2000 members).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import io
import os
import pathlib
import sys
import sysconfig
import warnings

import paddle

from . import _compat

SOURCE = pathlib.Path(__file__).resolve().parent / "csrc" / "momentum_kernel.cc"
GRADIENT_TABLE_SOURCE = SOURCE.with_name("gradient_table.cc")
# -ffp-contract=off: no fused multiply-add, so the rounding order (and every bit) matches
# Paddle's CPU kernel and the composed reference.
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-fast-math"]


def _link_flags():
    """Link the OpenMP runtime Paddle itself uses (Intel's libiomp5, which also serves GCC's
    GOMP_* calls) when Paddle ships it: with GCC's libgomp beside it, the two runtimes' worker
    threads compete for the cores and a 1M-element step took 8 ms instead of 0.15 ms."""
    libs = pathlib.Path(paddle.__file__).resolve().parent / "libs"
    if (libs / "libiomp5.so").exists():
        return [f"-L{libs}", "-l:libiomp5.so", f"-Wl,-rpath,{libs}"]
    return ["-fopenmp"]


def cache_directory(source: pathlib.Path = SOURCE) -> pathlib.Path:
    root = os.environ.get("PADDLE_MOMENTUM_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "paddle_momentum")
    key = hashlib.sha256()
    key.update(source.read_bytes())
    key.update(" ".join(CXX_FLAGS + _link_flags()).encode())
    key.update(paddle.__version__.encode())
    key.update((sysconfig.get_config_var("SOABI") or sys.version).encode())
    return pathlib.Path(root) / key.hexdigest()[:16]


@contextlib.contextmanager
def _exclusive(lock_path):
    """Hold an exclusive file lock (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(source: pathlib.Path, what: str, prefix: str, consequence: str):
    """Compile ``source`` (once, cached) and return the extension module, or None after one
    warning naming ``consequence``."""
    from paddle.utils import cpp_extension

    if not source.exists():
        warnings.warn(f"paddle_momentum: the {what}'s source {source} is missing (an "
                      f"incomplete installation); {consequence}", RuntimeWarning, stacklevel=3)
        return None
    directory = cache_directory(source)
    first_build = not any(directory.glob("**/*.so")) if directory.exists() else True
    if first_build:
        print(f"paddle_momentum: compiling the {what} once into {directory} (about 15 s)",
              file=sys.stderr)
    directory.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    try:
        # One builder at a time: data-parallel ranks starting together share the cache.
        with _exclusive(directory / "build.lock"), contextlib.redirect_stdout(log), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cpp_extension.load(
                name=prefix + directory.name,
                sources=[str(source)],
                extra_cxx_cflags=CXX_FLAGS,
                extra_ldflags=_link_flags(),
                extra_include_paths=[sysconfig.get_paths()["include"]],
                build_directory=str(directory),
                verbose=False,
            )
    except Exception as error:  # no compiler, missing headers, ...: fall back, loudly once
        warnings.warn(f"paddle_momentum: the {what} could not be built; {consequence}. "
                      f"Reason: {error}\n{log.getvalue()[-2000:]}", RuntimeWarning,
                      stacklevel=3)
        return None


@functools.lru_cache(maxsize=None)
def load():
    """The compiled extension module (ops ``pm_momentum``, ``pm_momentum_master``,
    ``pm_momentum_multi``, ``pm_momentum_multi_master``, ``pm_momentum_table``,
    ``pm_momentum_table_master``) or None."""
    return _build(SOURCE, "fused momentum kernel", "paddle_momentum_kernel_",
                  "using the composed-ops implementation (slower, same numbers)")


# Returned by the gradient table for member i's problem: -(8 * i + code).
TABLE_PROBLEMS = {1: "not a paddle.Tensor", 2: "parameter not a dense contiguous tensor of the "
                  "bucket's dtype and size", 3: "parameter storage moved", 4: "gradient not a "
                  "dense contiguous CPU tensor of the parameter's dtype and size",
                  5: "bad table", 6: "settings attributes changed"}
GRADIENT_UNFIT = 4
SETTINGS_CHANGED = 6


def table_problem(code: int):
    """``(member index, problem code)`` of a negative table result."""
    return (-code) // 8, (-code) % 8


@functools.lru_cache(maxsize=None)
def gradient_table():
    """``fill(params, table, snapshot) -> int`` (see ``csrc/gradient_table.cc``), or None where
    it cannot be built or its checks against Paddle's own accessors fail. ``snapshot`` is the
    flat list of the members' ``_settings.attribute_objects`` (or None: not checked). Off
    with ``PADDLE_MOMENTUM_GRADIENT_TABLE=0``."""
    if os.environ.get("PADDLE_MOMENTUM_GRADIENT_TABLE", "1") == "0" or load() is None:
        return None
    consequence = "flat buckets pass their gradients as a tensor list (slower, same numbers)"
    if _build(GRADIENT_TABLE_SOURCE, "gradient table", "paddle_momentum_grads_",
              consequence) is None:
        return None
    library = ctypes.PyDLL(str(next(cache_directory(GRADIENT_TABLE_SOURCE).glob("**/*.so"))))
    for function in (library.pm_gradient_table, library.pm_gradient_table_selfcheck,
                     library.pm_tensor_dtype):
        function.restype = ctypes.c_int64
    library.pm_gradient_table.argtypes = [ctypes.py_object] * 4
    library.pm_gradient_table_selfcheck.argtypes = [ctypes.py_object]
    library.pm_tensor_dtype.argtypes = [ctypes.py_object]
    stop_gradient = paddle.Tensor.__dict__["stop_gradient"]

    def fill(params, table, snapshot) -> int:
        return library.pm_gradient_table(params, table, stop_gradient, snapshot)

    fill.dtype_code = library.pm_tensor_dtype
    with _compat.isolated():
        problem = _gradient_table_problem(fill, library.pm_gradient_table_selfcheck)
    if problem:
        warnings.warn(f"paddle_momentum: the gradient table disagrees with Paddle ({problem}); "
                      f"{consequence}", RuntimeWarning, stacklevel=3)
        return None
    return fill


def new_gradient_table(params, fill):
    """The table ``fill`` (from ``gradient_table()``) fills for ``params``: int64 [4, n] on the
    CPU (rows: each parameter's data address, its size, its gradient's address, its dtype)."""
    return paddle.to_tensor([[p.data_ptr() for p in params], [int(p.size) for p in params],
                             [0] * len(params), [fill.dtype_code(p) for p in params]],
                            dtype="int64", place=paddle.CPUPlace())


def _gradient_table_problem(fill, selfcheck):
    """What differs between the table and Paddle's own accessors on a few tensors (with a
    gradient, without one, frozen, 2-D, with a regularizer changed), or None. The tensors
    need no initializer: checking draws nothing from Paddle's random generator."""
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
    params[1].optimize_attr["learning_rate"] = 0.25
    params[3].regularizer = paddle.regularizer.L1Decay(0.1)
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
