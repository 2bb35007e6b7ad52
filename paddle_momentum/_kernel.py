"""Building, caching and loading the fused C++ kernel (``csrc/momentum_kernel.cc``).

The kernel is compiled once per (source, Paddle version, Python) with Paddle's JIT extension
builder and cached under ``$PADDLE_MOMENTUM_CACHE`` (default ``~/.cache/paddle_momentum``).
Where it cannot be built (no C++ compiler, say), ``load()`` warns once and returns None and the
optimizer uses the composed-ops implementation.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import pathlib
import sys
import sysconfig
import warnings

import paddle

SOURCE = pathlib.Path(__file__).resolve().parent / "csrc" / "momentum_kernel.cc"
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


def cache_directory() -> pathlib.Path:
    root = os.environ.get("PADDLE_MOMENTUM_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "paddle_momentum")
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
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


@functools.lru_cache(maxsize=None)
def load():
    """The compiled extension module (ops ``pm_momentum``, ``pm_momentum_master``,
    ``pm_momentum_multi``, ``pm_momentum_multi_master``) or None."""
    from paddle.utils import cpp_extension

    if not SOURCE.exists():
        warnings.warn(f"paddle_momentum: the fused kernel's source {SOURCE} is missing (an "
                      "incomplete installation); using the composed-ops implementation",
                      RuntimeWarning, stacklevel=3)
        return None
    directory = cache_directory()
    name = "paddle_momentum_kernel_" + directory.name
    first_build = not any(directory.glob("**/*.so")) if directory.exists() else True
    if first_build:
        print(f"paddle_momentum: compiling the fused momentum kernel once into {directory} "
              "(about 15 s)", file=sys.stderr)
    directory.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    try:
        # One builder at a time: data-parallel ranks starting together share the cache.
        with _exclusive(directory / "build.lock"), contextlib.redirect_stdout(log), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                extra_cxx_cflags=CXX_FLAGS,
                extra_ldflags=_link_flags(),
                build_directory=str(directory),
                verbose=False,
            )
    except Exception as error:  # no compiler, missing headers, ...: fall back, loudly once
        warnings.warn(
            "paddle_momentum: the fused kernel could not be built; using the composed-ops "
            f"implementation (slower, same numbers). Reason: {error}\n{log.getvalue()[-2000:]}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
