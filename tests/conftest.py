"""Places to run on: CPU always; a CUDA place only when Paddle has CUDA (and, to run rather
than skip, a canary works).

The only GPU wheel reachable here (paddlepaddle-gpu 2.6.2) returns zeros on an H100 while
``paddle.utils.run_check()`` reports success, so a CUDA place must compute ``x*2+1`` right
before any test trusts it.
"""

import functools

import numpy as np
import paddle
import pytest


@functools.lru_cache(maxsize=None)
def cuda_skip_reason():
    if not paddle.is_compiled_with_cuda():
        return "Paddle is not compiled with CUDA"
    try:
        x = paddle.to_tensor(np.arange(4, dtype="float32"), place=paddle.CUDAPlace(0))
        got = (x * 2 + 1).numpy()
    except Exception as error:  # no device, no kernel image, ...
        return f"CUDA canary failed: {error}"
    if not np.array_equal(got, np.arange(4, dtype="float32") * 2 + 1):
        return f"CUDA canary x*2+1 gave {got}"
    return None


# The GPU place only where Paddle has CUDA (a CPU-only run has no GPU rows at all: they were
# 669 skips); there, a failing canary skips them with its reason.
PLACES = ["cpu"] + (["gpu"] if paddle.is_compiled_with_cuda() else [])


@pytest.fixture(params=PLACES)
def place(request):
    """Run the test with ``request.param`` as Paddle's current device."""
    if request.param == "gpu" and cuda_skip_reason():
        pytest.skip(cuda_skip_reason())
    previous = paddle.get_device()
    paddle.set_device(request.param)
    yield request.param
    paddle.set_device(previous)


# Hypothesis profiles for tests/test_fuzz.py: "ci" (the default) and "long"
# (python -m pytest tests/test_fuzz.py --hypothesis-profile=long).
from hypothesis import HealthCheck, settings  # noqa: E402

# "ci" is derandomized (the same 200 examples every run: CI stays reproducible); "long"
# explores new examples every run.
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")
