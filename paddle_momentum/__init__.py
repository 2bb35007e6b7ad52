"""paddle_momentum: a readable, bit-exact reimplementation of ``paddle.optimizer.Momentum``."""

from ._version import __version__

_MIN_PADDLE = (3, 0)


def _require_paddle():
    message = (
        "paddle_momentum needs PaddlePaddle 3.0.0 or newer (tested: 3.0.0 to 3.3.1). "
        "Install the CPU wheel with "
        "`pip install paddlepaddle` (or `pip install paddle_momentum[cpu]`), or the GPU wheel "
        "`paddlepaddle-gpu` that matches your CUDA version."
    )
    try:
        import paddle
    except ImportError as error:
        raise ImportError(message + f" (import paddle failed: {error})") from error
    version = getattr(paddle, "__version__", "0.0.0")
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = _MIN_PADDLE  # a development build ("0.0.0" is handled above)
    if major_minor < _MIN_PADDLE and version != "0.0.0":
        raise ImportError(message + f" Found paddle {version}.")


_require_paddle()

from . import _kernel  # noqa: E402
from .optimizer import Momentum  # noqa: E402
from .rule import momentum_update  # noqa: E402


def register_ops() -> bool:
    """Make our fused kernel's operators known to Paddle (building the kernel into its cache
    first if this machine has not yet): needed to run a saved static program that contains
    them (``pm_momentum*`` ops) in a process that has not built an optimizer of ours. True
    when they are registered; False where the kernel cannot be built (one warning says why).
    ``import paddle_momentum`` already registers them when the cache holds the kernel."""
    return _kernel.load() is not None


_kernel.load_if_built()

__all__ = ["Momentum", "momentum_update", "register_ops", "__version__"]
