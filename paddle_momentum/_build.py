"""Compiling our C++ sources once, into a cache that cannot break, and loading them quietly.

A cache entry is ``$PADDLE_MOMENTUM_CACHE/<key>/`` (default root ``~/.cache/paddle_momentum``),
``key`` a hash of the source, the flags, the Paddle version, the Python ABI and the compiler
binary. It holds:

* ``<name>.cc``: a copy of the source that was built (in a temporary directory: Paddle's
  builder cannot take a path with a space, and a build killed halfway then leaves nothing
  behind). The entry does not depend on where the package is installed (Paddle's builder
  records absolute source paths: a checkout and an installed copy of the same source used
  to rebuild each other's entry every time);
* ``build/``: Paddle's JIT builder's output, the library among it; ``build.log`` its output;
* ``verdict.json``: the library's path in the entry and its SHA-256, written once it built
  and passed its check. A later process hashes the library, and if it matches loads it directly, with no
  builder, no subprocess and no output: this is what makes a warm first step cheap, what
  lets a read-only cache (an image baked at build time) be used as is, and what catches a
  truncated or otherwise changed library (rebuilt, where the entry is writable);
* ``failed.json``: why the build or the check failed. Later processes warn once with that
  reason and fall back without rebuilding (set ``PADDLE_MOMENTUM_REBUILD=1`` to retry);
* ``build.lock``: builders of one entry take turns (data-parallel ranks starting together).

The build runs in a subprocess (Paddle's ``cpp_extension.load``) whose output goes to
``build.log``: the optimizer's process prints one line, naming the entry, while it compiles,
and nothing else, and it never redirects ``sys.stdout``. Loading is serialized by a lock, so
threads making their first step together share one load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import types
import warnings

import paddle

from . import _layout, _toolchain

# -ffp-contract=off: no fused multiply-add, so the rounding order (and every bit) matches
# Paddle's CPU kernel and the composed reference. -g0: Paddle's builder compiles with -g, and
# the debug information of the kernel's many instantiated loops was 40% of a cold build
# (26.5 s against 16.0 s for the kernel alone; 12.6 MB of object against 0.6 MB). GCC
# generates the same code with and without it.
CXX_FLAGS = (["-O3", "-g0", "-fopenmp", "-ffp-contract=off", "-fno-fast-math"]
             + _layout.compiler_defines())

LOCK = threading.RLock()  # one thread loads or builds at a time
_MESSAGE_LOCK = threading.Lock()

_BUILD = """\
import json, sys
from paddle.utils import cpp_extension
cpp_extension.load(**json.loads(sys.argv[1]))
"""


def link_flags():
    """Link the OpenMP runtime Paddle itself uses (Intel's libiomp5, which also serves GCC's
    GOMP_* calls) when Paddle ships it: with GCC's libgomp beside it, the two runtimes' worker
    threads compete for the cores and a 1M-element step took 8 ms instead of 0.15 ms."""
    libs = pathlib.Path(paddle.__file__).resolve().parent / "libs"
    if (libs / "libiomp5.so").exists():
        return [f"-L{libs}", "-l:libiomp5.so", f"-Wl,-rpath,{libs}"]
    return ["-fopenmp"]


def compiler():
    """The C++ compiler Paddle's builder will call (``$CXX``, else Python's configured one),
    as an absolute path, or None when there is none."""
    configured = os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++"
    return shutil.which(configured.split()[0])


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.path.abspath(os.environ.get("PADDLE_MOMENTUM_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "paddle_momentum")))


def _source_key(source):
    """A hash of what a library is built from, but the compiler."""
    key = hashlib.sha256()
    key.update(getattr(source, "key_bytes", source.read_bytes)())
    key.update(" ".join(CXX_FLAGS + link_flags()).encode())
    key.update(paddle.__version__.encode())
    key.update((sysconfig.get_config_var("SOABI") or sys.version).encode())
    return key


def cache_entry(source, cxx=None) -> pathlib.Path:
    """The cache entry of ``source`` (a path, or a :class:`GeneratedSource`) built with
    compiler ``cxx`` (default: ``compiler()``)."""
    cxx = cxx or compiler() or "none"
    stat = os.stat(cxx) if os.path.exists(cxx) else None
    key = _source_key(source)
    key.update(f"{cxx} {stat and stat.st_size} {stat and stat.st_mtime_ns}".encode())
    return cache_root() / key.hexdigest()[:16]


def _alias(source) -> pathlib.Path:
    """Where the cache records which entry holds ``source``'s library, built and checked,
    whatever the compiler: a machine without one (an image whose compiler was removed after
    ``python -m paddle_momentum build``) loads it from there."""
    return cache_root() / "built" / f"{_source_key(source).hexdigest()[:16]}.json"


def _entry_for_loading(source):
    """The entry to load ``source``'s library from: the compiler's, or without a compiler
    the one the alias names."""
    cxx = compiler()
    if cxx is not None:
        return cache_entry(source, cxx)
    name = str(_read_json(_alias(source)).get("entry", ""))
    return cache_root() / name if name and "/" not in name and name != ".." else None


def loadable(source) -> bool:
    """Whether ``source``'s library is in the cache, built and checked (a few ms)."""
    entry = _entry_for_loading(source)
    return entry is not None and verified_library(entry) is not None


class GeneratedSource:
    """A source file's text made in this process (the kernel with its generated part): it has
    what ``cached`` uses of a path (``name``, ``read_bytes()``, ``exists()``), and its cache
    entry is keyed on this text, so a changed generator input builds a new entry."""

    def __init__(self, name: str, text: str, origin: pathlib.Path, note: str = "",
                 key_text=None):
        self.name, self._bytes, self.origin, self.note = name, text.encode(), origin, note
        self._key = (text if key_text is None else key_text).encode()

    def read_bytes(self) -> bytes:
        return self._bytes

    def key_bytes(self) -> bytes:
        """What the cache entry is keyed on (the text, but comments that change no code)."""
        return self._key

    def exists(self) -> bool:
        return True

    def __str__(self):
        return f"{self.origin} (with its generated part)"


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: pathlib.Path) -> dict:
    """A JSON object from ``path``; {} when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json(path: pathlib.Path, value: dict) -> None:
    """Write ``path`` whole or not at all (a full disk leaves the old file, or none)."""
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps(value))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def verified_library(entry: pathlib.Path):
    """The entry's library when its verdict says it built and passed its check, names a
    library of this entry, and the file is still the one checked; else None."""
    verdict = _read_json(entry / "verdict.json")
    library = entry / str(verdict.get("library", ""))
    try:
        inside = (library.resolve().parent.parent.parent == entry.resolve()
                  and library.name.endswith(entry.name + ".so"))
        return library if inside and _sha256(library) == verdict.get("sha256") else None
    except OSError:
        return None


def built_library(entry: pathlib.Path, name: str):
    """A library that a build (``_build``) left in the entry, not checked yet: the one its
    ``built.json`` names, of this entry, with the hash recorded there; else None. (A library
    built in the background, ``prebuild``, is checked by the first ``cached`` call.)"""
    record = _read_json(entry / "built.json")
    library = entry / str(record.get("library", ""))
    try:
        inside = (library.resolve().parent.parent.parent == entry.resolve()
                  and library.name.startswith(name) and library.suffix == ".so")
        return library if inside and _sha256(library) == record.get("sha256") else None
    except OSError:
        return None


def prebuild(source: pathlib.Path, what: str, prefix: str, note: str = "", low_priority=False):
    """Start building ``source``'s library in a background thread when its entry holds none,
    so that a first use compiles two libraries at once (2 cores: about 15 s instead of 30);
    the first ``cached`` call for it then finds it built (and checks it). Does nothing where
    the library is built or failed before, or there is no compiler; a failed build is
    remembered (``failed.json``) as ``cached`` remembers one, and reported by it."""
    cxx = compiler()
    if cxx is None:
        return None
    entry = cache_entry(source, cxx)
    name = prefix + entry.name
    if (verified_library(entry) is not None or built_library(entry, name) is not None
            or ((entry / "failed.json").exists()
                and os.environ.get("PADDLE_MOMENTUM_REBUILD") != "1")
            or _too_full(entry) is not None):
        return None

    def build():
        try:
            entry.mkdir(parents=True, exist_ok=True)
            with _exclusive(entry / "build.lock"):
                if verified_library(entry) is None and built_library(entry, name) is None:
                    library = _build(source, what, name, entry, note,
                                     background=low_priority)
                    if isinstance(library, str):  # (INTERRUPTED: nothing recorded)
                        _fail(entry, library)
        except OSError:
            pass  # (an unusable cache: cached() warns about it)

    thread = threading.Thread(target=build, name=f"paddle_momentum build {what}", daemon=True)
    thread.start()
    return thread


_exclusive = _toolchain.exclusive


_OURS = os.path.dirname(os.path.abspath(__file__))
_PADDLE = os.path.dirname(os.path.abspath(paddle.__file__))
_STANDARD_LIBRARY = os.path.dirname(os.path.abspath(contextlib.__file__))  # (decorators)


def warn(message):
    """One warning of ours (``RuntimeWarning``, prefixed), attributed to the user's code: the
    first caller outside this package, Paddle and the standard library (whose decorators wrap
    ``step``)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and (frame.f_code.co_filename.startswith((_OURS, _PADDLE, _STANDARD_LIBRARY + os.sep, "<frozen"))):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"paddle_momentum: {message}", RuntimeWarning,
                  stacklevel=level if frame is not None else 2)


_warn = warn


def cached(source: pathlib.Path, what: str, prefix: str, consequence: str, load, check=None,
           before_build=None):
    """``load(library path)`` for ``source``'s library (named ``prefix`` + its entry's key),
    compiled once into its cache entry;
    ``check(loaded)`` (a problem string or None) runs once per entry, after its build;
    ``before_build()`` runs when this call is about to build (a first use). None,
    after one warning that names ``consequence``, where it cannot be built, loaded or
    checked. A library built and checked before is loaded without a compiler."""
    with LOCK:
        if not source.exists():
            _warn(f"the {what}'s source {source} is missing (an incomplete installation); "
                  f"{consequence}")
            return None
        loading = _entry_for_loading(source)
        library = verified_library(loading) if loading is not None else None
        if library is not None:
            return _loaded(load, library, what, consequence)
        cxx = compiler()
        if cxx is None:
            _warn(f"no C++ compiler was found (looked for $CXX, then "
                  f"{sysconfig.get_config_var('CXX') or 'c++'}), so the {what} cannot be "
                  f"built; {consequence}")
            return None
        entry = cache_entry(source, cxx)
        failed = entry / "failed.json"
        if failed.exists() and os.environ.get("PADDLE_MOMENTUM_REBUILD") != "1":
            reason = _read_json(failed).get("reason", "reason not recorded")
            _warn(f"the {what} failed to build or check before ({reason}; details in "
                  f"{entry}, PADDLE_MOMENTUM_REBUILD=1 retries); {consequence}")
            return None
        full = _too_full(entry)
        if full is not None:
            _warn(f"the {what} is not built: {full}; {consequence}")
            return None
        if before_build is not None:
            before_build()
        try:
            entry.mkdir(parents=True, exist_ok=True)
            with _exclusive(entry / "build.lock"):
                return _built_and_checked(source, what, prefix, consequence, load, check,
                                          entry)
        except OSError as error:
            _warn(f"the kernel cache {entry} is not usable ({_short(error)}); set "
                  f"PADDLE_MOMENTUM_CACHE to a writable directory with space; {consequence}")
            return None


def _built_and_checked(source, what, prefix, consequence, load, check, entry):
    library = verified_library(entry)  # another process may have built it
    if library is not None:
        return _loaded(load, library, what, consequence)
    # built by prebuild (or a process that stopped before its check)
    library = built_library(entry, prefix + entry.name)
    if library is None:
        library = _build(source, what, prefix + entry.name, entry)
    if library is INTERRUPTED:
        _warn(f"the {what}'s build was interrupted (nothing recorded: the next use builds "
              f"it); {consequence}")
        return None
    if isinstance(library, str):  # the build failed: remember why
        _fail(entry, library)
        _warn(f"the {what} could not be built ({library}; see "
              f"{entry / 'build.log'}); {consequence}")
        return None
    loaded = _loaded(load, library, what, consequence)
    if loaded is None:
        _fail(entry, "it built but could not be loaded")
        return None
    problem = _checked(check, loaded)
    if problem is DEFERRED:  # (neither verdict: a later use checks it)
        _write_json(entry / "built.json", {"library": str(library.relative_to(entry)),
                                           "sha256": _sha256(library)})
        return loaded
    if problem:
        _fail(entry, problem)
        _warn(f"the {what} disagrees with {problem}; {consequence}")
        return None
    _write_json(entry / "verdict.json", {"library": str(library.relative_to(entry)),
                                         "sha256": _sha256(library)})
    (entry / "failed.json").unlink(missing_ok=True)
    try:  # (a machine without a compiler loads it from the entry this names)
        _alias(source).parent.mkdir(exist_ok=True)
        _write_json(_alias(source), {"entry": entry.name})
    except OSError:
        pass
    return loaded


# A build needs about 2 MB in its entry (the kernel's library and objects), and more while
# it copies: below this much free space it is not started (it would fail at the end, after
# 20 s of compiling, in every process).
MIN_FREE_BYTES = 32 << 20


def _too_full(entry):
    """Why the disk under ``entry`` cannot take a build (too little space), or None."""
    place = entry
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        free = shutil.disk_usage(place).free
    except OSError:
        return None
    if free >= MIN_FREE_BYTES:
        return None
    return (f"the disk of the kernel cache {cache_root()} has {free >> 20} MB free (a build "
            f"needs {MIN_FREE_BYTES >> 20}; set PADDLE_MOMENTUM_CACHE to a directory with space)")


def _short(error: OSError) -> str:
    """An OSError in a few words (``shutil.Error`` lists every file it failed on)."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        first = error.args[0][0] if error.args[0] else ("", "", "")
        return f"copying failed: {first[-1]}" if first else "copying failed"
    return f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")


def _loaded(load, library, what, consequence):
    """``load(library)``, or None after one warning (Paddle's loading helpers are not a
    public API: a release that changed them must not break the optimizer)."""
    try:
        return load(library)
    except Exception as error:  # noqa: BLE001 - any failure: the composed fallback
        _warn(f"the {what} could not be loaded from {library} ({type(error).__name__}: "
              f"{error}); {consequence}")
        return None


def _checked(check, loaded):
    """``check(loaded)``'s problem, or None; a check that raised (a Paddle release without
    an op it runs, say) is a problem too, never the user's step failing."""
    if check is None:
        return None
    try:
        return check(loaded)
    except Exception as error:  # noqa: BLE001 - any failure: the composed fallback
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        return f"its check raised {type(error).__name__}: {first_line}"


def _fail(entry, reason):
    _write_json(entry / "failed.json", {"reason": reason, "paddle": paddle.__version__})
    (entry / "built.json").unlink(missing_ok=True)  # a retry builds again


INTERRUPTED = object()  # a build stopped by a signal (Ctrl-C): not a failed build
DEFERRED = object()  # a check that could not be made now: no verdict is recorded


def _compiled(copy, name, entry, built, background=False):
    """Compile ``copy`` into ``built``/``name``.so: with the toolchain's recorded commands
    (``_toolchain``), else with Paddle's builder, whose commands are then recorded. None when
    built; else ``INTERRUPTED`` or why it failed (a str). Output in the entry's build.log.
    ``background``: the recorded commands at the lowest CPU priority (``nice``), beside a
    training that runs the composed ops meanwhile (on 2 cores, its steps took twice as long
    beside a normal one); ``_toolchain.hurry`` raises them for a waiter."""
    lowest = ["nice", "-n", "19"] if background and shutil.which("nice") else []
    cxx = compiler()
    where = _toolchain.directory(cache_root(), cxx, CXX_FLAGS, link_flags())
    commands = _toolchain.recorded(where)
    with open(entry / "build.log", "w") as log:
        if commands is not None:
            (built / name).mkdir()  # (where the builder puts it: build/<name>/<name>.so)
            code = _toolchain.compile_library(commands, copy, built / name / f"{name}.so",
                                              log, lowest)
            if code < 0:
                return INTERRUPTED
            if code == 0:
                return None
            log.write("(the recorded commands failed: Paddle's builder now)\n")
        log.flush()
        arguments = dict(name=name, sources=[str(copy)], extra_cxx_cflags=CXX_FLAGS,
                         extra_ldflags=link_flags(),
                         extra_include_paths=[sysconfig.get_paths()["include"]],
                         build_directory=str(built), verbose=commands is None)
        try:
            # (never at a low priority: its compiler is a grandchild, which hurry() cannot
            # reach; this is the first build with this toolchain only)
            code = _toolchain.run([sys.executable, "-c", _BUILD, json.dumps(arguments)], log,
                                  copy.parent)
        except subprocess.TimeoutExpired:
            return "the build took more than 30 minutes"
    if code < 0:  # killed by a signal (Ctrl-C reaches the builder too)
        return INTERRUPTED
    output = (entry / "build.log").read_text(errors="replace")
    if code != 0 or not any(built.glob(f"**/{name}*.so")):
        lines = [line for line in output.splitlines() if "error" in line.lower()]
        return lines[-1].strip()[:300] if lines else f"the builder exited with {code}"
    if commands is None:
        _toolchain.record(where, output, copy, name)
    return None


def _build(source, what, name, entry, note="", background=False):
    """Build ``source`` for ``entry`` in a subprocess, in a private temporary directory (Paddle's
    builder cannot take a path with a space, and a build killed halfway leaves nothing in the
    entry), then move the result into ``entry/build``; the library's path, or the reason the
    build failed (a str)."""
    with _MESSAGE_LOCK:  # (two libraries may build at once: one whole line each)
        generated = getattr(source, "note", "")
        sys.stderr.write(f"paddle_momentum: compiling the {what}{generated} once into {entry} "
                         f"(about 15 s){note}\n")
        sys.stderr.flush()
    (entry / "verdict.json").unlink(missing_ok=True)
    (entry / "built.json").unlink(missing_ok=True)
    (entry / source.name).write_bytes(source.read_bytes())  # what was built, kept beside it
    # (removed by hand, not by TemporaryDirectory's finalizer, which runs at exit before a
    # background build finishes)
    workspace = pathlib.Path(tempfile.mkdtemp(prefix="paddle_momentum_build_"))
    try:
        copy = workspace / source.name
        copy.write_bytes(source.read_bytes())
        (workspace / "build").mkdir()
        result = _compiled(copy, name, entry, workspace / "build", background)
        if result is not None:
            return result
        shutil.rmtree(entry / "build", ignore_errors=True)  # a changed library, replaced
        shutil.copytree(workspace / "build", entry / "build")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    library = sorted((entry / "build").glob(f"**/{name}*.so"))[0]
    _write_json(entry / "built.json", {"library": str(library.relative_to(entry)),
                                       "sha256": _sha256(library)})
    return library


def import_ops(library: pathlib.Path):
    """The custom operators in ``library`` as a module of Python functions, as Paddle's
    builder would return them, without writing a file or logging: the library's operators
    are registered and each function's source is Paddle's own generated API code."""
    from paddle.utils.cpp_extension import extension_utils

    module_name = library.stem
    module = types.ModuleType(module_name)
    for op_name in extension_utils.load_op_meta_info_and_register_op(str(library)):
        exec(compile(extension_utils._custom_api_content(op_name), f"<{module_name}>",
                     "exec"), module.__dict__)
    return module
