"""The benchmark runs and reports every candidate (no timing is asserted: speed is measured
by ``python -m paddle_momentum bench``, not by tests)."""

from paddle_momentum import bench


def test_bench_smoke_reports_every_candidate():
    lines = []
    rows = bench.run(["many-small", "static-mlp"], steps=1, out=lines.append, quick=True,
                     memory=False)
    labels = {(r["workload"], r["candidate"]) for r in rows}
    for workload in ("many-small", "static-mlp"):
        assert {(workload, c) for c in ("builtin", "builtin-mt", "ours-fused",
                                        "ours-composed")} <= labels
    assert all(r["median_ms"] > 0 for r in rows)
    assert any(line.startswith("memory-bandwidth roof") for line in lines)
