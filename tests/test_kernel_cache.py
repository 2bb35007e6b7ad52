"""The kernel cache (``paddle_momentum._build``) under what breaks caches, each in fresh
processes (``cache_worker.py``) as users run them: first use by two threads at once on an
empty cache, a warm cache (quiet, nothing written, nothing built), the same source from
another place, a corrupt library, a failing build, no compiler, an unusable cache location
and a read-only one. Every run that trains must equal the built-in bit for bit."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from harness import run_python

HERE = pathlib.Path(__file__).resolve().parent
WORKER = HERE / "cache_worker.py"


def _run(tmp_path, cache, **env):
    environment = dict(os.environ, PADDLE_MOMENTUM_CACHE=str(cache), **env)
    done = subprocess.run([sys.executable, str(WORKER)], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # (a background build thread that dies prints its traceback, and the process goes on)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same_as_builtin"], result
    assert result["stdout_intact"]
    return result, _our_lines(done.stderr)


def _our_lines(stderr):
    """What our loading printed: Paddle's import prints its own lines (a missing ccache,
    say) with or without us; ours all say 'paddle_momentum: '."""
    return [line for line in stderr.splitlines() if "paddle_momentum: " in line]


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in pathlib.Path(root).rglob("*"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache built by the first use of two threads at once (the result, what it printed,
    the cache)."""
    tmp_path = tmp_path_factory.mktemp("built")
    # relative, with a space: Paddle's builder cannot take a space, ours builds elsewhere
    result, lines = _run(tmp_path, "the cache")
    return result, lines, tmp_path / "the cache"


@pytest.fixture
def cache_copy(built, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(built[2], copy)
    return copy


def test_first_use_by_two_threads_builds_once_and_says_so_in_one_line_each(built):
    result, lines, cache = built
    assert result["kernel"] and result["table"]
    assert len(lines) == 2 and all("compiling" in line and str(cache) in line
                                   for line in lines), lines
    assert len(list(cache.glob("*/verdict.json"))) == 2


def test_state_files_that_lie_are_not_trusted(cache_copy, tmp_path):
    """A verdict naming another entry's library (with its right hash) is not loaded; an
    unreadable failed.json is a remembered failure, not a crash."""
    verdicts = {json.loads(p.read_text())["library"].split("/")[1].split("_")[2]: p
                for p in cache_copy.glob("*/verdict.json")}
    kernel, table = verdicts["kernel"], verdicts["grads"]
    kernel.write_text(json.dumps(dict(json.loads(table.read_text()),
                                      library=str(table.parent / json.loads(
                                          table.read_text())["library"]))))
    (kernel.parent / "failed.json").write_text("")
    result, lines = _run(tmp_path, cache_copy)
    assert not result["kernel"]
    assert len(lines) == 1 and "reason not recorded" in lines[0], lines


def test_warm_cache_is_quiet_and_writes_nothing(cache_copy, tmp_path):
    before = _listing(cache_copy)
    result, lines = _run(tmp_path, cache_copy)
    assert result["kernel"] and result["table"]
    assert lines == []
    assert _listing(cache_copy) == before


def test_read_only_cache_with_the_libraries_is_used_as_is(cache_copy, tmp_path):
    result, lines = _run(tmp_path, cache_copy, READ_ONLY_CACHE="1")
    assert result["kernel"] and result["table"] and lines == []


def test_same_source_from_another_place_builds_nothing(cache_copy, tmp_path):
    """Paddle's builder records absolute source paths; ours builds from the entry's copy."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(HERE.parent / "paddle_momentum", elsewhere / "paddle_momentum")
    before = _listing(cache_copy)
    result, lines = _run(tmp_path, cache_copy, PYTHONPATH=str(elsewhere))
    assert result["kernel"] and result["table"] and lines == []
    assert _listing(cache_copy) == before


def test_a_corrupt_library_is_detected_and_rebuilt(cache_copy, tmp_path):
    """A truncated library used to kill the process with SIGBUS."""
    verdict = next(p for p in cache_copy.glob("*/verdict.json")
                   if "grads" in json.loads(p.read_text())["library"])
    library = verdict.parent / json.loads(verdict.read_text())["library"]
    library.write_bytes(library.read_bytes()[: library.stat().st_size // 2])
    result, lines = _run(tmp_path, cache_copy)
    assert result["kernel"] and result["table"]
    assert len(lines) == 1 and "compiling the gradient table" in lines[0]


def _failing_compiler(tmp_path):
    script = tmp_path / "failing-c++"
    script.write_text("#!/bin/sh\necho 'failing-c++: error: this compiler always fails' >&2\n"
                      "exit 1\n")
    script.chmod(0o755)
    return str(script)


def test_a_failed_build_is_remembered(tmp_path):
    cache = tmp_path / "cache"
    compiler = _failing_compiler(tmp_path)
    env = dict(CXX=compiler, CC=compiler)
    result, lines = _run(tmp_path, cache, **env)
    assert not result["kernel"]
    assert any("could not be built" in line for line in lines), lines
    log = next(cache.glob("*/build.log"))
    built_at = log.stat().st_mtime_ns
    result, lines = _run(tmp_path, cache, **env)
    assert not result["kernel"]
    assert not any("compiling" in line for line in lines), lines
    assert any("failed to build or check before" in line for line in lines), lines
    assert log.stat().st_mtime_ns == built_at


def test_no_compiler_gives_one_warning_and_the_composed_ops(tmp_path):
    result, lines = _run(tmp_path, tmp_path / "cache", CXX="/nonexistent/c++")
    assert not result["kernel"]
    assert len(lines) == 1 and "no C++ compiler was found" in lines[0], lines


def test_an_unusable_cache_location_gives_one_warning(tmp_path):
    """A cache path that cannot be created (here below a regular file) used to raise
    OSError from step()."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result, lines = _run(tmp_path, blocker / "cache")
    assert not result["kernel"]
    assert len(lines) == 1 and "is not usable" in lines[0], lines


def test_a_library_that_cannot_be_loaded_gives_one_warning(cache_copy, tmp_path):
    """Loading goes through Paddle helpers that are not a public API: if a release changed
    them, the optimizer falls back to the composed ops with one warning instead of failing."""
    script = ("import warnings, paddle\n"
              "from paddle.utils.cpp_extension import extension_utils\n"
              "def broken(library):\n"
              "    raise AttributeError('no such helper')\n"
              "extension_utils.load_op_meta_info_and_register_op = broken\n"
              "import paddle_momentum\n"
              "from paddle_momentum import _rules\n"
              "p = paddle.create_parameter([3], 'float32')\n"
              "opt = paddle_momentum.Momentum(0.1, parameters=[p])\n"
              "(p * 2).sum().backward()\n"
              "opt.step()\n"
              "print(_rules.load() is None)\n")
    stdout, stderr = run_python(script, tmp_path, cache_copy)
    assert stdout.split()[-1] == "True"
    lines = _our_lines(stderr)
    assert len(lines) == 1 and "could not be loaded" in lines[0], lines


def test_build_command_finds_a_built_entry_ready(cache_copy, tmp_path):
    """``python -m paddle_momentum build`` (for a container image, say) reports a built entry
    ready, writes nothing and prints none of our lines. (On an empty cache it builds through
    the same ``_build.cached`` path as a first step, tested above; nox's sessions run it on
    fresh venvs.)"""
    before = _listing(cache_copy)
    command = [sys.executable, "-m", "paddle_momentum", "build"]
    warm = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PADDLE_MOMENTUM_CACHE=str(cache_copy)))
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert "fused kernel: ready" in warm.stdout and "gradient table: ready" in warm.stdout
    assert "norm clips in the kernel: yes" in warm.stdout
    assert _listing(cache_copy) == before and _our_lines(warm.stderr) == []


# ------------------------------------------------------------------ as containers and
# impatient people use it
def test_a_built_cache_loads_without_a_compiler(cache_copy, tmp_path):
    """An image baked with `python -m paddle_momentum build`, its compiler removed: the
    compiler is needed to build, not to load."""
    before = _listing(cache_copy)
    result, lines = _run(tmp_path, cache_copy, CXX="/nonexistent/c++")
    assert result["kernel"] and result["table"] and lines == []
    assert _listing(cache_copy) == before


def test_ctrl_c_during_the_first_build_records_no_failure(tmp_path):
    """Ctrl-C reaches the builders too (one process group, as in a terminal): an interrupted
    build is not a failed one, and the next process builds without being told to."""
    import signal
    import time

    cache = tmp_path / "cache"
    process = subprocess.Popen([sys.executable, str(WORKER)], cwd=tmp_path,
                               env=dict(os.environ, PADDLE_MOMENTUM_CACHE=str(cache)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(cache.glob("*/build.log")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # (the compilers are running)
    os.killpg(process.pid, signal.SIGINT)
    process.communicate(timeout=300)
    assert list(cache.glob("*/build.log")), "no build started"
    assert not list(cache.glob("*/failed.json")), "an interrupted build was recorded as failed"
    result, lines = _run(tmp_path, cache)
    assert result["kernel"] and result["table"]
    assert not any("failed to build" in line for line in lines), lines


def test_a_full_disk_is_said_in_one_short_line_and_compiles_nothing(tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(tiny)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr[-200:]!r}")
    try:
        for _ in range(2):  # (and the next process does not compile either)
            result, lines = _run(tmp_path, tiny / "cache")
            assert not result["kernel"]
            assert len(lines) == 1 and "MB free" in lines[0] and len(lines[0]) < 600, lines
            assert not any("compiling" in line for line in lines)
    finally:
        subprocess.run(["umount", str(tiny)], check=True)


def test_too_many_threads_are_bounded_with_a_warning(cache_copy, tmp_path):
    """PADDLE_MOMENTUM_NUM_THREADS=100000 aborted the process inside OpenMP at the first
    large step."""
    script = ("import warnings, numpy as np, paddle, paddle_momentum\n"
              "warnings.simplefilter('always')\n"
              "p = paddle.create_parameter([1 << 20], 'float32')\n"
              "before = p.numpy().copy()\n"
              "opt = paddle_momentum.Momentum(0.1, parameters=[p], kernel='fused')\n"
              "p.grad = paddle.ones([1 << 20], 'float32')\n"
              "opt.step()  # (v = g = 1: p - lr * 1, in float32)\n"
              "print(np.array_equal(p.numpy(), before - np.float32(0.1)))\n")
    stdout, stderr = run_python(script, tmp_path, cache_copy,
                                PADDLE_MOMENTUM_NUM_THREADS="100000")
    assert stdout.strip().splitlines()[-1] == "True"
    lines = _our_lines(stderr)
    assert len(lines) == 1 and "PADDLE_MOMENTUM_NUM_THREADS=100000" in lines[0], lines
