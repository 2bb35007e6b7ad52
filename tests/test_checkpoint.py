"""Crash-safe checkpoints: a training process killed with SIGKILL at a random step resumes in
a new process and ends bit-identical to an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest

from harness import assert_same
from paddle_momentum import Momentum, checkpoint

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")
STEPS = 30


def _worker(directory, *extra):
    return [sys.executable, WORKER, "--dir", str(directory), "--steps", str(STEPS), *extra]


def _final(path):
    with np.load(path) as arrays:
        return [arrays[k] for k in sorted(arrays.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.parametrize("attempt", range(2))
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path, attempt):
    reference_dir, crash_dir = tmp_path / "reference", tmp_path / "crash"
    reference_dir.mkdir()
    crash_dir.mkdir()
    subprocess.run(_worker(reference_dir, "--out", str(tmp_path / "reference.npz")),
                   check=True, capture_output=True, timeout=600)

    # random, but the same on every run (reproducible CI): a step chosen per attempt
    kill_after = random.Random(attempt).randint(0, STEPS - 3)
    # the delay keeps the worker running after it reports step `kill_after`: the kill lands
    # after the next step's update and before its checkpoint
    process = subprocess.Popen(_worker(crash_dir, "--step-delay", "0.2"),
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.strip() == f"step {kill_after}":
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the worker ended before step {kill_after}"

    subprocess.run(_worker(crash_dir, "--resume", "--out", str(tmp_path / "resumed.npz")),
                   check=True, capture_output=True, timeout=600)
    for i, (a, b) in enumerate(zip(_final(tmp_path / "reference.npz"),
                                   _final(tmp_path / "resumed.npz"))):
        assert_same(a, b, f"parameter {i} (killed after step {kill_after})")


@pytest.mark.parametrize("first,second", [("builtin", "ours"), ("ours", "builtin")])
def test_checkpoint_crosses_optimizers_across_processes(tmp_path, first, second):
    """Process 1 trains 12 steps with one optimizer and checkpoints; process 2 resumes with
    the other; the result equals an uninterrupted run (of either: they are bit-identical)."""
    crossed, straight = tmp_path / "crossed", tmp_path / "straight"
    crossed.mkdir()
    straight.mkdir()
    for args in ([crossed, "--optimizer", first, "--stop-after", "11"],
                 [crossed, "--optimizer", second, "--resume", "--out",
                  str(tmp_path / "crossed.npz")],
                 [straight, "--optimizer", first, "--out", str(tmp_path / "straight.npz")]):
        subprocess.run(_worker(*args), check=True, capture_output=True, timeout=600)
    for i, (a, b) in enumerate(zip(_final(tmp_path / "straight.npz"),
                                   _final(tmp_path / "crossed.npz"))):
        assert_same(a, b, f"parameter {i}")


def test_a_failing_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = paddle.nn.Linear(3, 2)
    optimizer = Momentum(0.1, parameters=model.parameters())
    path = tmp_path / "last.ckpt"
    checkpoint.save(path, model, optimizer, step=1)
    before = path.read_bytes()

    def failing_fsync(descriptor):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, model, optimizer, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left behind
    assert checkpoint.load(path, model, optimizer) == {"step": 1}


def test_checkpoint_crosses_to_the_builtin(tmp_path):
    """A checkpoint saved with ours loads into paddle.optimizer.Momentum and continues
    bit-identically (and the other way round)."""
    path = tmp_path / "last.ckpt"
    x = paddle.ones([4, 3])
    results = []
    for first, second in ((Momentum, paddle.optimizer.Momentum),
                          (paddle.optimizer.Momentum, Momentum)):
        runs = []
        for resume in (False, True):
            with paddle.utils.unique_name.guard():
                paddle.seed(1)
                model = paddle.nn.Linear(3, 2)
                opt = (second if resume else first)(0.1, parameters=model.parameters())
                if resume:
                    checkpoint.load(path, model, opt)
                for _ in range(3):
                    model(x).square().sum().backward()
                    opt.step()
                    opt.clear_grad()
                if not resume:
                    checkpoint.save(path, model, opt)
                runs.append([p.numpy() for p in model.parameters()])
        results.append(runs)
    # 3 steps with `first`, then 3 with `second`, equals 6 steps with either optimizer
    with paddle.utils.unique_name.guard():
        paddle.seed(1)
        model = paddle.nn.Linear(3, 2)
        opt = Momentum(0.1, parameters=model.parameters())
        for _ in range(6):
            model(x).square().sum().backward()
            opt.step()
            opt.clear_grad()
        expected = [p.numpy() for p in model.parameters()]
    for runs in results:
        for i, (a, b) in enumerate(zip(expected, runs[1])):
            assert_same(a, b, f"parameter {i}")
