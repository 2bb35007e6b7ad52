"""Every supported PaddlePaddle release, each in its own venv (nox).

    pip install nox
    nox -s matrix                        # all releases: fast path, parity, oracle, bench
    nox -s "matrix(paddle='3.0.0')"      # one release
    nox -s quick                         # the oldest release, quickly (CI)
    nox -s torch                         # ours against torch.optim.SGD itself (CI)

Each session installs ``paddlepaddle==<release>`` and this package (not editable: as a user
installs it), then checks, against that release's own built-in optimizer:

* the fast path is in use: the fused kernel and the gradient table build, the fused norm
  clips pass their check, and a step updates flat buckets through the gradient table
  (``FAST_PATH``);
* the differential matrix (``python -m paddle_momentum parity``: dygraph, PIR and the legacy
  IR, both kernels, 0 ulp);
* the numpy-oracle rows (``tests/test_decisions.py``);
* ``matrix`` only: the many-small benchmark ratio.

Release-specific environment: Paddle before 3.3 reads protobuf descriptor fields that
protobuf 6 removed (fleet's DistributedStrategy fails with AttributeError 'label'), so those
releases get ``protobuf<6``, as their users must.
"""

import pathlib
import shutil

import nox

RELEASES = ["3.0.0", "3.1.1", "3.2.2", "3.3.0", "3.3.1"]
OLDEST = RELEASES[0]
OLD_PROTOBUF = {"3.0.0", "3.1.1", "3.2.2"}

nox.options.sessions = ["matrix"]
nox.options.reuse_existing_virtualenvs = True

FAST_PATH = """
import paddle, paddle_momentum
from paddle_momentum import _kernel, _rules
ops = _rules.load()
assert ops is not None, "no fused kernel"
assert _kernel.gradient_table() is not None, "no gradient table"
assert _kernel.norm_reductions_exact(ops), "the fused norm clips disagree with Paddle here"
params = [paddle.create_parameter([16], "float32") for _ in range(8)]
optimizer = paddle_momentum.Momentum(0.1, 0.9, parameters=params,
                                     grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
for _ in range(2):
    paddle.add_n([p.sum() for p in params]).backward()
    optimizer.step()
    optimizer.clear_grad()
buckets = [b for bs in optimizer._flat.buckets_of_group.values() for b in bs]
assert buckets and all(b.table is not None for b in buckets), "no gradient-table bucket"
print("fast path in use on paddle", paddle.__version__)
"""


def _install(session, paddle):
    session.install(f"paddlepaddle=={paddle}",
                    *(["protobuf<6"] if paddle in OLD_PROTOBUF else []))
    session.install(f"{_private_copy(session)}[test]")


def _private_copy(session):
    """The package's files in a directory of the session's own: pip builds in the tree it
    installs from (build/, *.egg-info), and sessions running at once collided there."""
    copy = pathlib.Path(session.create_tmp()) / "source"
    shutil.rmtree(copy, ignore_errors=True)
    root = pathlib.Path(__file__).resolve().parent
    shutil.copytree(root / "paddle_momentum", copy / "paddle_momentum",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "setup.cfg", "README.md"):
        shutil.copy(root / name, copy / name)
    return copy


def _check(session, parity_every=1):
    session.run("python", "-m", "paddle_momentum", "build")
    session.run("python", "-c", FAST_PATH)
    session.run("python", "-m", "paddle_momentum", "parity", "--every", str(parity_every))
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "tests/test_decisions.py")


@nox.session(python="3.11")
@nox.parametrize("paddle", RELEASES)
def matrix(session, paddle):
    """One release: fast path, full parity matrix, oracle rows, many-small bench."""
    _install(session, paddle)
    _check(session)
    session.run("python", "-m", "paddle_momentum", "bench", "--workload", "many-small",
                "--no-memory", "--steps", "11")


@nox.session(python="3.11")
def quick(session):
    """The oldest release: fast path, every 4th parity case, oracle rows (for CI)."""
    _install(session, OLDEST)
    _check(session, parity_every=4)


@nox.session(python="3.11")
def torch(session):
    """The torch.optim.SGD options (dampening, maximize, Nesterov, weight decay) against torch
    itself: the default torch wheel from PyPI (runs on CPU), the newest Paddle (for CI)."""
    _install(session, RELEASES[-1])
    session.install("torch")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "tests/test_decisions.py", "-k", "torch",
                env={"PADDLE_MOMENTUM_REQUIRE_TORCH": "1"})
