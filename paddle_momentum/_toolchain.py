"""Compiling a library with the commands Paddle's extension builder runs, directly, with
Paddle's header precompiled.

Paddle's builder (``paddle.utils.cpp_extension``) starts Python twice (setuptools, which
imports Paddle) and parses ``paddle/extension.h`` again for every library: about 3 s and
4.7 s of a 16 s kernel build on 2 cores, paid again for every rule a researcher tries. So the
first library built with a toolchain (Paddle release, compiler, flags, Python ABI) is built
by the builder with its commands printed (into its ``build.log``); :func:`record` keeps the
compile and link commands it ran, as templates (so they are whatever this Paddle release's
builder does), and precompiles Paddle's header with that compile command. Later libraries are
:func:`compile_library`: one compiler run, with the precompiled header, and one link. GCC
uses a precompiled header only where it fits the command (else it parses the header: never
a wrong build, at worst a slower one); where anything here fails, the caller builds with
Paddle's builder as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import sysconfig

import paddle

HEADER = '#include "paddle/extension.h"\n'
PRECOMPILED_HEADER_ROOM = 1 << 30  # free bytes needed to make the precompiled header
_COMPILERS = ("gcc", "g++", "c++", "cc", "clang", "clang++")


def directory(root: pathlib.Path, cxx, flags, ldflags) -> pathlib.Path:
    """Where the toolchain of these (Paddle, compiler, flags, Python) is recorded."""
    stat = os.stat(cxx)
    key = hashlib.sha256(json.dumps([paddle.__version__, cxx, stat.st_size, stat.st_mtime_ns,
                                     flags, ldflags, sysconfig.get_config_var("SOABI"),
                                     sys.version]).encode())
    return root / "toolchain" / key.hexdigest()[:16]


def recorded(where: pathlib.Path):
    """``{"compile": [...], "link": [...], "header": path or None}`` recorded in ``where``
    (templates with ``{source}``, ``{object}``, ``{library}``), or None."""
    try:
        commands = json.loads((where / "commands.json").read_text())
    except (OSError, ValueError):
        return None
    header = commands.get("header")
    if header and not os.path.exists(header + ".gch"):
        commands["header"] = None
    return commands


def record(where: pathlib.Path, builder_output: str, source: pathlib.Path, library_name: str):
    """Keep the compile and link commands the builder printed in ``builder_output`` while it
    built ``source`` into ``library_name``.so, and precompile Paddle's header with them.
    Nothing (no error) where they cannot be found or written."""
    compile_command = link_command = None
    for line in builder_output.splitlines():
        words = _words(line)
        if words and str(source) in words and "-c" in words and "-o" in words:
            compile_command = words
        elif words and "-shared" in words and "-o" in words and any(
                w.endswith(f"{library_name}.so") for w in words):
            link_command = words
    if compile_command is None or link_command is None:
        return
    object_path = compile_command[compile_command.index("-o") + 1]
    library = link_command[link_command.index("-o") + 1]
    compile_template = [{str(source): "{source}", object_path: "{object}"}.get(w, w)
                        for w in compile_command]
    link_template = [{object_path: "{object}", library: "{library}"}.get(w, w)
                     for w in link_command]
    try:
        where.mkdir(parents=True, exist_ok=True)
        with exclusive(where / "lock"):
            if recorded(where) is not None:
                return
            header = where / "paddle_extension.h"
            header.write_text(HEADER)
            precompile = list(compile_template)
            at = precompile.index("{source}")
            precompile[at - 1:at + 1] = ["-x", "c++-header", str(header)]
            precompile[precompile.index("{object}")] = str(header) + ".gch"
            # (the precompiled header takes about 210 MB: made only where there is room)
            roomy = shutil.disk_usage(where).free >= PRECOMPILED_HEADER_ROOM
            done = subprocess.run(precompile, capture_output=True, timeout=900) if roomy \
                else None
            commands = {"compile": compile_template, "link": link_template,
                        "header": str(header) if done and done.returncode == 0 else None}
            partial = where / f"commands.{os.getpid()}.partial"
            partial.write_text(json.dumps(commands))
            os.replace(partial, where / "commands.json")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return


def _words(line):
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    name = os.path.basename(words[0]) if words else ""
    return words if any(name == c or name.endswith("-" + c) or name.startswith(c + "-")
                        for c in _COMPILERS) else None


def compile_library(commands, source: pathlib.Path, library: pathlib.Path, log, prefix=()):
    """Compile ``source`` into ``library`` with ``commands`` (from :func:`recorded`), the
    precompiled header included, each run after ``prefix`` (``nice -n 19``, say); output to
    ``log``. The exit code (0: built; < 0: killed by a signal)."""
    object_path = library.with_suffix(".o")
    compile_command = [w.replace("{source}", str(source)).replace("{object}", str(object_path))
                       for w in commands["compile"]]
    if commands.get("header"):
        compile_command[1:1] = ["-include", commands["header"], "-Winvalid-pch"]
    link_command = [w.replace("{object}", str(object_path)).replace("{library}", str(library))
                    for w in commands["link"]]
    for command in (compile_command, link_command):
        log.write(" ".join(shlex.quote(w) for w in command) + "\n")
        log.flush()
        code = run(list(prefix) + command, log, source.parent, low_priority=bool(prefix))
        if code != 0:
            return code
    return 0


LOW_PRIORITY = set()  # the process ids of compilers running at a low priority now


def run(command, log, cwd, low_priority=False, timeout=1800):
    """Run ``command`` with its output to ``log``; its exit code. A low-priority one is
    listed in :data:`LOW_PRIORITY` while it runs (:func:`hurry` raises it)."""
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    if low_priority:
        LOW_PRIORITY.add(process.pid)
    try:
        return process.wait(timeout=timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        LOW_PRIORITY.discard(process.pid)


def hurry():
    """Someone waits for the builds running at a low priority: back to the normal one where
    this process may (root may; an unprivileged user's stay low)."""
    for pid in list(LOW_PRIORITY):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 0)
        except (OSError, AttributeError):
            pass


@contextlib.contextmanager
def exclusive(lock_path):
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
