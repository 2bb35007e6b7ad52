"""The benchmark runs and reports every candidate (no timing is asserted: speed is measured
by ``python -m paddle_momentum bench``, not by tests)."""

from harness import assert_same
from paddle_momentum.tools import bench


def test_bench_smoke_reports_every_candidate():
    lines = []
    workloads = ["many-small", "static-mlp", "many-small-loop"]
    rows = bench.run(workloads, steps=1, out=lines.append, quick=True, memory=False)
    labels = {(r["workload"], r["candidate"]) for r in rows}
    for workload in workloads:
        assert {(workload, c) for c in ("builtin", "builtin-mt", "ours-fused",
                                        "ours-composed")} <= labels
    assert all(r["median_ms"] > 0 for r in rows)
    assert any(line.startswith("% roof") for line in lines)
    # the roof is an upper bound: no step beats it
    assert all(r["roof_percent"] is None or r["roof_percent"] <= 100 for r in rows)
    assert any(r["roof_percent"] is not None for r in rows)


def test_training_loop_workload_trains_every_candidate_alike():
    """The -loop workloads' steps (clear_grad, backward, step) give every candidate the same
    parameters as the built-in, bit for bit."""
    candidates = bench.available_candidates(out=lambda message: None)
    with bench.dygraph_steppers(bench.many_small_shapes, candidates, True, loop=True) as steps:
        for _ in range(3):
            for step in steps.values():
                step.prepare()
                step()
        trained = {label: [p.numpy() for p in step.parameters] for label, step in steps.items()}
    for label, params in trained.items():
        for i, (expected, actual) in enumerate(zip(trained["builtin"], params)):
            assert_same(expected, actual, f"{label} param {i}")
