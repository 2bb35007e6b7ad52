"""paddle_momentum: a readable, bit-exact reimplementation of ``paddle.optimizer.Momentum``."""

import sys

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


def register_ops(rule=None) -> bool:
    """Make our fused kernel's operators known to Paddle (building the kernel into its cache
    first if this machine has not yet): needed to run a saved static program that contains
    them in a process that has not built an optimizer of ours (``pm_momentum*`` ops; with
    ``rule=fn``, the ops of that rule's kernel, ``pm_r<digest>_momentum*``). True when they
    are registered; False where the kernel cannot be built (one warning says why).
    ``import paddle_momentum`` already registers the package rule's when the cache holds it."""
    from . import _rules

    chosen = _rules.DEFAULT if rule is None else _rules.Rule(rule)
    return chosen.kernel(wait=True) is not None


def _load() -> None:
    """Import Paddle (checking its version) and the optimizer, and register the package rule's
    kernel ops when the cache holds them (a few ms): what ``import paddle_momentum`` does."""
    global Momentum, momentum_update
    _require_paddle()
    from . import _rules
    from .optimizer import Momentum
    from .rule import momentum_update

    _rules.load_if_built()


def _imported_for_python_m() -> bool:
    """This is ``python -m paddle_momentum``'s import of the package, made before its
    ``__main__`` runs: ``sys.argv[0]`` is "-m" until then, and ``sys.orig_argv`` (Python
    3.10+) names the module just before the arguments."""
    command = getattr(sys, "orig_argv", None)
    if sys.argv[:1] != ["-m"] or not command or len(command) < len(sys.argv):
        return False
    return command[-len(sys.argv)] in (__name__, "-m" + __name__)


if _imported_for_python_m():
    # The command line parses its arguments first (--help needs no Paddle, whose import takes
    # a second and warns "No ccache found"), then loads through __getattr__.
    def __getattr__(name):
        if name in ("Momentum", "momentum_update"):
            _load()
            return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
else:
    _load()

__all__ = ["Momentum", "momentum_update", "register_ops", "__version__"]
