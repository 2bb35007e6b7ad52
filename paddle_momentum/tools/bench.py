"""Benchmark: the optimizer step of ``paddle_momentum.Momentum`` against the built-in.

Every candidate optimizer runs in this one process on its own copy of the same parameters and
gradients. Steps are interleaved round-robin (one step of each candidate per round, the first
candidate rotating from round to round) so that drifts in machine speed hit all candidates
alike; each candidate's time is the median of its timed steps after a few warm-up steps, and
only ``opt.step()`` (or, for the static workload, ``Executor.run``) is inside the timer.

The dygraph workloads time ``step()`` on gradients computed once, as the issue's anchors did;
their ``-loop`` twins time the same ``step()`` inside a training loop: before each step an
untimed ``clear_grad()`` and ``backward()``, so every step sees freshly produced gradients, as
in real training. The ``settings-`` workloads change a setting the step reads (a learning-rate
scale, the clip object, ``need_clip``) before every step, untimed and alike for every candidate.

Reported per workload and candidate: the median step time, its ratio to the built-in
(``builtin``, i.e. ``paddle.optimizer.Momentum`` with default options; above 1 is slower), the
achieved bandwidth (the bytes a fused float32 momentum step must move, 20 per element: read
p, g, v and write p, v, divided by the step time), that bandwidth as a share of the
workload's roof (the fastest fused-kernel pass over one buffer of as many elements, on the same
threads, measured just before the workload, and never below the fastest step: an upper bound,
so the share never exceeds 100%), and, optionally, the peak extra memory of constructing the optimizer and taking its first
steps, measured for each candidate in a fresh subprocess.

Command line::

    python -m paddle_momentum bench                       # all workloads, 15 timed steps
    python -m paddle_momentum bench --quick               # small sizes, no memory probes
    python -m paddle_momentum bench --workload resnet50 --workload one-big --steps 31
    python -m paddle_momentum bench --sizes               # one tensor, 64K-16M, fresh processes
    python -m paddle_momentum bench --markdown --steps 21 # a Markdown table for the docs
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import paddle

import paddle_momentum

from .bench_cases import (WORKLOADS, Stepper, Workload, available_candidates, dygraph_steppers,
                          gradient_values, make_stepper, one_big_shapes,
                          parameters_with_gradients, ran, total_elements)

BASELINE = "builtin"
WARMUP_STEPS = 3
DEFAULT_STEPS = 15
# The composed candidate takes ~1.6 s per step on the 64M-element tensor: fewer steps there.
SLOW_CANDIDATE = "ours-composed"
SLOW_WORKLOAD = "one-big"
SLOW_STEPS = 5
BYTES_PER_ELEMENT = 20  # fused float32 momentum: read param, grad, velocity; write param, velocity
FLOAT32_BYTES = 4


# First step in a fresh process (the kernel loaded from a warm cache, buckets built):
# name -> parameter shapes.
FIRST_STEP_MODELS = {"resnet18": "resnet18", "20000-tiny": [[4]] * 20000}
FIRST_STEP_SCRIPT = """
import json, sys, time
import paddle
kind, model = sys.argv[1], json.loads(sys.argv[2])
if kind == "ours":
    import paddle_momentum
    paddle_momentum.register_ops(), paddle_momentum._kernel.gradient_table()
if model == "resnet18":
    params = paddle.vision.models.resnet18().parameters()
else:
    params = [paddle.create_parameter(shape, "float32") for shape in model]
cls = paddle.optimizer.Momentum if kind == "builtin" else paddle_momentum.Momentum
opt = cls(0.1, 0.9, parameters=params, weight_decay=1e-4)
paddle.add_n([p.sum() for p in params]).backward()
start = time.perf_counter()
opt.step()
print(time.perf_counter() - start)
"""


def first_step_seconds(kind: str, model, runs: int = 3) -> List[float]:
    """``kind``'s ('builtin' or 'ours') first ``step()`` in ``runs`` fresh processes."""
    import json
    import subprocess

    return [float(subprocess.run(
        [sys.executable, "-c", FIRST_STEP_SCRIPT, kind, json.dumps(model)],
        capture_output=True, text=True, check=True).stdout.split()[-1])
        for _ in range(runs)]


def first_step_report(out: Callable[[str], object] = print, runs: int = 3) -> None:
    """The first ``step()`` of the built-in and of ours, each in fresh processes (medians)."""
    out(f"first step() in a fresh process (median of {runs}; ours with a warm kernel cache)")
    for name, model in FIRST_STEP_MODELS.items():
        builtin = statistics.median(first_step_seconds("builtin", model, runs))
        ours = statistics.median(first_step_seconds("ours", model, runs))
        out(f"{name:<12} builtin {builtin:8.3f} s   ours {ours:8.3f} s   "
            f"x builtin {ours / builtin:5.2f}   ours - builtin {ours - builtin:+.3f} s")


# One tensor of each size, each in fresh processes: where a mid-size tensor's step depends on
# the process (its allocations' placement), one process hides it.
SWEEP_SIZES = (1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24)
SWEEP_RUNS = 3
SWEEP_CANDIDATES = (BASELINE, "ours-fused")


def one_tensor_ratio(elements: int, steps: int) -> float:
    """Ours-fused's median step over the built-in's on one float32 vector of ``elements``,
    interleaved in this process."""
    candidates = [c for c in available_candidates(lambda *_: None)
                  if c.label in SWEEP_CANDIDATES]
    with dygraph_steppers(lambda quick: [[elements]], candidates, False) as steppers:
        times = time_interleaved(steppers, {label: steps for label in steppers})
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    return medians["ours-fused"] / medians[BASELINE]


def size_sweep(out: Callable[[str], object] = print, steps: int = DEFAULT_STEPS,
               runs: int = SWEEP_RUNS, sizes: Sequence[int] = SWEEP_SIZES) -> Dict[int, list]:
    """For each of ``sizes``, :func:`one_tensor_ratio` in ``runs`` fresh processes; prints a
    row per size and returns ``{elements: [ratio, ...]}``."""
    out(f"one float32 vector per size, ours-fused / builtin (median of {steps} steps, "
        f"interleaved), each run a fresh process")
    results = {}
    for elements in sizes:
        ratios = []
        for _ in range(runs):
            finished = subprocess.run(
                [sys.executable, "-m", "paddle_momentum", "bench", "--one-tensor",
                 str(elements), "--steps", str(steps)],
                capture_output=True, text=True, check=True)
            ratios.append(float(finished.stdout.strip().splitlines()[-1]))
        results[elements] = ratios
        out(f"{elements:>10} elements: " + "  ".join(f"{r:.2f}" for r in ratios)
            + f"   (max {max(ratios):.2f})")
    return results


# --------------------------------------------------------------------------------- measuring
def prepare(stepper: Stepper) -> None:
    """Run ``stepper``'s untimed ``prepare()`` (a training loop's clear_grad and backward),
    where it has one."""
    getattr(stepper, "prepare", lambda: None)()


def time_interleaved(steppers: Dict[str, Stepper], steps: Dict[str, int],
                     warmup: int = WARMUP_STEPS,
                     failures: Optional[Dict[str, Exception]] = None) -> Dict[str, List[float]]:
    """Seconds of each timed step, per label, from round-robin interleaved runs.

    Every stepper first takes ``warmup`` untimed steps (interleaved too). Then each round
    times one step of every label that still has steps to take (``steps[label]``), starting
    one label further along than the round before. A stepper's ``prepare()``, where it has
    one, runs untimed before each of its steps. A stepper that raises takes no more steps:
    its exception goes into ``failures`` (when given; else it propagates), its label has no
    times.
    """
    labels = list(steppers)
    times: Dict[str, List[float]] = {label: [] for label in labels}

    def take(label, timed):
        if label in (failures or {}):
            return
        step = steppers[label]
        try:
            prepare(step)
            began = time.perf_counter()
            step()
            elapsed = time.perf_counter() - began
        except Exception as error:  # pylint: disable=broad-except
            if failures is None:
                raise
            failures[label] = error
            del times[label]
            return
        if timed:
            times[label].append(elapsed)

    for _ in range(warmup):
        for label in labels:
            take(label, False)
    for round_index in range(max(steps.values())):
        start = round_index % len(labels)
        for label in labels[start:] + labels[:start]:
            if label in times and len(times[label]) < steps[label]:
                take(label, True)
    return times


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def measure_bandwidth_roof(elements: int, threads: Optional[int] = None,
                           repeats: int = 15) -> float:
    """GB/s of a streaming in-place add ``np.add(a, b, out=a)`` on float32 arrays, split
    into ``threads`` chunks run concurrently (numpy releases the GIL; default: every usable
    core), counting the bytes read and written (12 per element); the median of ``repeats``
    runs after one warm-up run.

    In place and on every core, like a fused momentum step (which writes back the p and v it
    has just read, on OpenMP threads): an ``out=c`` add also pays an uncounted
    read-for-ownership of ``c``, and one thread does not saturate memory, so a single-threaded
    ``out=c`` roof came out ~40% below what a fused step achieves. Tensors small enough to stay
    in cache are not bound by this roof at all.
    """
    threads = threads or usable_cores()
    a = np.ones(elements, np.float32)
    b = np.ones(elements, np.float32)
    bounds = np.linspace(0, elements, threads + 1).astype(int)
    chunks = [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]

    def add_chunk(chunk):
        np.add(a[chunk], b[chunk], out=a[chunk])

    with ThreadPoolExecutor(threads) as pool:
        def streaming_add():
            list(pool.map(add_chunk, chunks))

        streaming_add()
        seconds = []
        for _ in range(repeats):
            began = time.perf_counter()
            streaming_add()
            seconds.append(time.perf_counter() - began)
    return 3 * FLOAT32_BYTES * elements / statistics.median(seconds) / 1e9


def measure_step_roof(elements: int, repeats: int = 15) -> Optional[float]:
    """GB/s of the access pattern every momentum step needs: one fused-kernel pass over one
    contiguous float32 buffer of ``elements`` (read p, g, v; write p, v: 20 bytes an element,
    on the kernel's threads), the fastest of ``repeats`` runs after one warm-up run (an upper
    bound: no step over as many elements can move its bytes faster);
    None where the fused kernel is not built. A step that moves the same bytes cannot beat
    it except where its tensors stay in cache (a numpy add moves another pattern: against it
    fused steps showed 144-201%)."""
    from .. import _declarations, _rules, implementations

    ops = _rules.load()
    if ops is None:
        return None
    param, grad, velocity = (paddle.ones([elements], "float32") for _ in range(3))
    lr = paddle.to_tensor([0.0], "float32")  # (the values do not matter, the bytes do)
    options = _declarations.rule_options(momentum=0.9)
    seconds = []
    for run in range(repeats + 1):
        began = time.perf_counter()
        implementations.fused(ops, param, grad, velocity, None, lr, **options)
        if run:
            seconds.append(time.perf_counter() - began)
    return BYTES_PER_ELEMENT * elements / min(seconds) / 1e9


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (``VmRSS``: resident now, ``VmHWM``: its peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _release_free_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; no-op elsewhere), so that
    a baseline RSS counts live memory only and later allocations cannot hide in freed pages."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def measure_extra_memory(workload_name: str, candidate_label: str, quick: bool) -> float:
    """MB (2**20 bytes) of peak RSS above the baseline caused by constructing
    ``candidate_label``'s optimizer and taking its first :data:`WARMUP_STEPS` steps on
    ``workload_name``, in this process (:func:`probe_extra_memory` runs it in a fresh one).

    The baseline is the RSS once the parameters and their gradients exist and the memory
    freed while making them is returned to the OS (else the optimizer's first allocations
    would reuse it unseen: a built-in velocity of 100 MB measured as 0). Where the kernel
    does not let us reset the peak, the RSS after the steps is used (transients then missed).
    A loop workload's steps each run its untimed part first (clear_grad and backward), so the
    peak is that of a training loop, gradients included; so does a workload's
    ``before_step`` change.
    """
    workload = WORKLOADS[workload_name]
    candidates = {c.label: c for c in available_candidates(out=lambda message: None)}
    values, gradients = gradient_values(workload.shapes(quick))
    parameters = parameters_with_gradients(values, gradients)
    del values
    if not workload.loop:
        del gradients
    gc.collect()
    _release_free_heap()
    baseline = _status_kb("VmRSS")
    peak_field = "VmHWM" if _reset_peak_rss() else "VmRSS"
    optimizer = candidates[candidate_label].make(parameters, **workload.options)
    step = make_stepper(optimizer, parameters, gradients if workload.loop else None,
                        workload.loop, workload.before_step)
    for _ in range(WARMUP_STEPS):
        prepare(step)
        step()
    return (_status_kb(peak_field) - baseline) / 1024


def probe_extra_memory(workload_name: str, candidate_label: str, quick: bool,
                       timeout: float = 600) -> Optional[float]:
    """:func:`measure_extra_memory` in a fresh Python process; None if the probe failed."""
    command = [sys.executable, "-m", "paddle_momentum.tools.bench",
               "--memory-probe", workload_name, candidate_label] + (["--quick"] if quick else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"memory probe {workload_name}/{candidate_label}: timed out", file=sys.stderr)
        return None
    try:
        return float(result.stdout.split()[-1])
    except (ValueError, IndexError):
        last_lines = "\n".join(result.stderr.strip().splitlines()[-5:])
        print(f"memory probe {workload_name}/{candidate_label} failed "
              f"(exit {result.returncode}):\n{last_lines}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------------- reporting
COLUMNS = (("workload", "<21"), ("candidate", "<14"), ("median ms", ">10"),
           ("x builtin", ">10"), ("GB/s", ">7"), ("% roof", ">7"), ("extra MB", ">9"))


def _format_row(cells: Sequence[str]) -> str:
    return "  ".join(f"{cell:{spec}}" for cell, (_, spec) in zip(cells, COLUMNS))


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table_row(row: dict) -> str:
    return _format_row([row["workload"], row["candidate"], _fmt(row["median_ms"], ".2f"),
                        _fmt(row["ratio"], ".2f"), _fmt(row["gbps"], ".1f"),
                        _fmt(row["roof_percent"], ".0f"), _fmt(row["extra_mb"], ".1f")])


def _describe(workload: Workload, quick: bool, steps: Optional[int] = None) -> str:
    """``name: description`` (of what runs, ``quick`` or not), the timed steps where the
    workload raised ``steps`` to its minimum and, for a dygraph workload, its size and
    bytes per step."""
    text = f"{workload.name}: {workload.describe(quick)}"
    if steps is not None and not quick and workload.min_steps > steps:
        text += f" ({workload.min_steps} timed steps, its minimum)"
    if not workload.is_dygraph:
        return text
    shapes = workload.shapes(quick)
    elements = total_elements(shapes)
    tensors = f"{len(shapes)} tensor" + ("" if len(shapes) == 1 else "s")
    return (f"{text}; {tensors}, {elements / 1e6:.2f}M elements, "
            f"{BYTES_PER_ELEMENT * elements / 1e6:.1f} MB moved per fused step")


def cpu_model() -> Optional[str]:
    """The CPU's model name from ``/proc/cpuinfo`` (None where there is none, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip().lower() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return None


def markdown_report(rows: Sequence[dict], command: str, quick: bool = False) -> str:
    """``rows`` (as :func:`run` returns them, ``quick`` or not) as a Markdown table, one row
    per workload: what ran, the built-in's median ms, then every other candidate's time / the
    built-in's, then each candidate's extra MB where any was measured; preceded by one line
    saying when (UTC), on what machine and versions, and by which ``command`` it was made."""
    workloads = list(dict.fromkeys(row["workload"] for row in rows))
    candidates = list(dict.fromkeys(row["candidate"] for row in rows))
    cell = {(row["workload"], row["candidate"]): row for row in rows}
    others = [label for label in candidates if label != BASELINE]
    measured = [label for label in candidates
                if any(row["extra_mb"] is not None for row in rows if row["candidate"] == label)]
    header = ([f"{BASELINE} median ms"] + [f"{label} x {BASELINE}" for label in others]
              + [f"{label} extra MB" for label in measured])

    def value(workload, label, key, spec):
        row = cell.get((workload, label))
        return _fmt(None if row is None else row[key], spec)

    lines = ["| workload | what ran | " + " | ".join(header) + " |",
             "|---|---|" + "---:|" * len(header)]
    for workload in workloads:
        cells = ([ran(WORKLOADS[workload], quick), value(workload, BASELINE, "median_ms", ".2f")]
                 + [value(workload, label, "ratio", ".2f") for label in others]
                 + [value(workload, label, "extra_mb", ".1f") for label in measured])
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return "\n".join([provenance(command, f"x {BASELINE}: time / {BASELINE}'s time, below "
                                           "1 is faster"), ""] + lines)


def sizes_markdown(results: Dict[int, list], command: str) -> str:
    """:func:`size_sweep`'s ``results`` as a Markdown table, after :func:`provenance`'s line."""
    lines = ["| elements | ours-fused x builtin, one fresh process each |", "|---:|---|"]
    lines += [f"| {elements:,} | " + ", ".join(f"{r:.2f}" for r in ratios) + " |"
              for elements, ratios in results.items()]
    return "\n".join([provenance(command, "one float32 vector"), ""] + lines)


def provenance(command: str, note: str) -> str:
    """One line saying when (UTC), on what machine and versions, and by which ``command`` a
    result was made (``note``: how to read it)."""
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    model = cpu_model()
    machine = f"{os.cpu_count()} CPU cores" + (f" ({model})" if model else "")
    return (f"Measured {now} on {machine}, Paddle {paddle.__version__}, paddle_momentum "
            f"{paddle_momentum.__version__} ({note}): `{command}`")


# --------------------------------------------------------------------------------- entry points
def run(workloads: Optional[Sequence[str]] = None, steps: int = DEFAULT_STEPS,
        out: Callable[[str], object] = print, *, quick: bool = False,
        memory: Optional[bool] = None, skip_composed_big: bool = True) -> List[dict]:
    """Benchmark ``workloads`` (default: all of :data:`WORKLOADS`), printing a table via ``out``.

    ``steps`` timed steps per candidate (``ours-composed`` on ``one-big`` takes at most
    :data:`SLOW_STEPS`, or is skipped with ``skip_composed_big``); ``quick`` uses small sizes;
    ``memory`` probes each dygraph candidate's extra memory in a subprocess (default: on
    unless ``quick``). Returns one dict per workload and candidate with the keys
    ``workload, candidate, median_ms, ratio, gbps, roof_percent, extra_mb`` (None where not
    measured).
    """
    names = list(workloads or WORKLOADS)
    memory = (not quick) if memory is None else memory
    roof_elements = 2**24 if quick else 2**25
    kernel_roof = measure_step_roof(roof_elements) is not None
    if kernel_roof:
        out(f"% roof: GB/s against the roof of the workload's own size, measured just before "
            f"it: the fastest of 15 fused-kernel passes over one buffer of as many float32 "
            f"elements, on the same threads ({BYTES_PER_ELEMENT} bytes per element: the access "
            f"pattern of every step; small workloads run from cache), raised to the fastest "
            f"step if one beat it, so never above 100%")
    else:
        out(f"% roof: against a numpy in-place float32 add on {usable_cores()} threads over "
            f"{roof_elements} elements (no fused kernel here), raised to the fastest step if "
            f"one beat it; GB/s counts {BYTES_PER_ELEMENT} bytes per element and step")
    fallback_roof = None if kernel_roof else measure_bandwidth_roof(roof_elements)
    out(f"step times: median of {steps} steps per candidate after {WARMUP_STEPS} warm-up, "
        f"interleaved; x builtin = time / builtin's time; extra MB = peak RSS increase of "
        f"constructing the optimizer and its first {WARMUP_STEPS} steps (MiB, own process; "
        f"-loop: with their clear_grad and backward; '-': not measured, e.g. --quick or "
        f"--no-memory)")
    candidates = available_candidates(out)
    header = _format_row([name for name, _ in COLUMNS])
    out(header)
    out("-" * len(header))

    rows: List[dict] = []
    for name in names:
        workload = WORKLOADS[name]
        chosen = [c for c in candidates if not (
            skip_composed_big and name == SLOW_WORKLOAD and c.label == SLOW_CANDIDATE)]
        step_counts = {c.label: min(steps, SLOW_STEPS)
                       if (name, c.label) == (SLOW_WORKLOAD, SLOW_CANDIDATE)
                       else max(steps, 0 if quick else workload.min_steps)
                       for c in chosen}
        out(f"# {_describe(workload, quick, steps)}")
        elements = total_elements(workload.shapes(quick)) if workload.is_dygraph else None
        roof_gbps = None
        if elements:
            roof_gbps = measure_step_roof(elements) if kernel_roof else fallback_roof
        failures: Dict[str, Exception] = {}
        with workload.steppers(chosen, quick) as steppers:
            times = time_interleaved(steppers, step_counts, failures=failures)
        for label, error in failures.items():
            first_line = (str(error).strip().splitlines() or [""])[0]
            out(f"#   {label} raises {type(error).__name__}: {first_line[:200]}")
        chosen = [c for c in chosen if c.label not in failures]
        medians = {label: statistics.median(seconds) for label, seconds in times.items()}
        if elements and roof_gbps is not None:  # (an upper bound: what a step reached is one)
            roof_gbps = max(roof_gbps, BYTES_PER_ELEMENT * elements / min(medians.values()) / 1e9)
        for candidate in chosen:
            seconds = medians[candidate.label]
            row = {
                "workload": name,
                "candidate": candidate.label,
                "median_ms": seconds * 1e3,
                "ratio": seconds / medians[BASELINE] if BASELINE in medians else None,
                "gbps": BYTES_PER_ELEMENT * elements / seconds / 1e9 if elements else None,
                "extra_mb": (probe_extra_memory(name, candidate.label, quick)
                             if memory and workload.is_dygraph
                             else None),
            }
            row["roof_percent"] = (None if row["gbps"] is None or roof_gbps is None
                                   else 100 * row["gbps"] / roof_gbps)
            rows.append(row)
            out(_table_row(row))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: see the module docstring and ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m paddle_momentum bench",
        description="Optimizer step time of paddle_momentum.Momentum vs paddle.optimizer."
                    "Momentum, interleaved in one process (lr 0.1, momentum 0.9, "
                    "weight_decay 1e-4, float32).")
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS),
                        help="workload to run (repeatable; default: all)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"timed steps per candidate (default {DEFAULT_STEPS})")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, for a smoke test (one-big: "
                             f"{one_big_shapes.label(True)}; no memory probes)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                        help="probe each candidate's extra memory in a fresh subprocess "
                             "(default: on, off with --quick)")
    parser.add_argument("--skip-composed-big", action=argparse.BooleanOptionalAction,
                        default=True,
                        help=f"leave {SLOW_CANDIDATE} out of {SLOW_WORKLOAD} (default: on; "
                             f"when included it takes at most {SLOW_STEPS} timed steps)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the results (of the workloads, --sizes or --rules) as "
                             "Markdown on stdout, after a line saying when, where and by "
                             "which command they were made; the running output on stderr")
    parser.add_argument("--first-step", action="store_true",
                        help="measure only the first step() in fresh processes")
    parser.add_argument("--rules", action="store_true",
                        help="measure only rules of one's own (rule=): the fused kernel "
                             "against the composed ops, and a new rule's first step")
    parser.add_argument("--sizes", action="store_true",
                        help="measure only one tensor of 64K to 16M elements, each size in "
                             f"{SWEEP_RUNS} fresh processes")
    parser.add_argument("--memory-probe", nargs=2, metavar=("WORKLOAD", "CANDIDATE"),
                        help=argparse.SUPPRESS)  # internal: one measurement, printed in MB
    parser.add_argument("--one-tensor", type=int, metavar="ELEMENTS",
                        help=argparse.SUPPRESS)  # internal: one size's ratio, printed
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.quick and (args.sizes or args.rules or args.first_step):
        parser.error("--quick shrinks the workloads only: --sizes, --rules and --first-step "
                     "run at their one size")
    if args.markdown and args.first_step:
        parser.error("--markdown tables the workloads, --sizes or --rules, not --first-step")
    command = shlex.join(["python", "-m", "paddle_momentum", "bench", *argv])
    # (with --markdown the running output goes to stderr, the Markdown alone to stdout)
    out = (lambda line: print(line, file=sys.stderr, flush=True)) if args.markdown else print

    if args.memory_probe:
        workload_name, candidate_label = args.memory_probe
        print(f"{measure_extra_memory(workload_name, candidate_label, args.quick):.1f}")
        return 0
    if args.one_tensor:
        print(f"{one_tensor_ratio(args.one_tensor, args.steps):.4f}")
        return 0
    if args.sizes:
        results = size_sweep(out=out, steps=args.steps)
        if args.markdown:
            print(sizes_markdown(results, command))
        return 0
    if args.first_step:
        first_step_report()
        return 0
    if args.rules:
        from . import bench_rules

        if args.markdown:
            print(provenance(command, "the default, a fused kernel generated from the rule, "
                                      "against kernel='composed'") + "\n")
        bench_rules.run(steps=args.steps)  # (a Markdown table already)
        print()
        bench_rules.first_step()
        return 0
    rows = run(args.workload, steps=args.steps, out=out, quick=args.quick, memory=args.memory,
               skip_composed_big=args.skip_composed_big)
    if args.markdown:
        print(markdown_report(rows, command, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
