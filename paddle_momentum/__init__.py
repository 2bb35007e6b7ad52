"""paddle_momentum: a readable, bit-exact reimplementation of ``paddle.optimizer.Momentum``."""

from ._version import __version__

_MIN_PADDLE = (3, 0)


def _require_paddle():
    message = (
        "paddle_momentum needs PaddlePaddle >= 3.0. Install the CPU wheel with "
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

from .optimizer import Momentum  # noqa: E402
from .rule import momentum_update  # noqa: E402

__all__ = ["Momentum", "momentum_update", "__version__"]
