"""The benchmark runs and reports every candidate (no timing is asserted: speed is measured
by ``python -m paddle_momentum bench``, not by tests)."""

from harness import assert_same
from paddle_momentum.tools import bench, bench_cases


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
    candidates = bench_cases.available_candidates(out=lambda message: None)
    with bench_cases.dygraph_steppers(bench_cases.many_small_shapes, candidates, True,
                                      loop=True) as steps:
        for _ in range(3):
            for step in steps.values():
                step.prepare()
                step()
        trained = {label: [p.numpy() for p in step.parameters] for label, step in steps.items()}
    for label, params in trained.items():
        for i, (expected, actual) in enumerate(zip(trained["builtin"], params)):
            assert_same(expected, actual, f"{label} param {i}")


def _cells(markdown_row):
    return [cell.strip() for cell in markdown_row.strip().strip("|").split("|")]


def test_markdown_rows_are_the_workloads_run_with_the_printed_ratios(capsys):
    import os

    import paddle

    import paddle_momentum

    argv = ["--quick", "--workload", "many-small", "--steps", "3", "--markdown"]
    assert bench.main(argv) == 0
    printed = capsys.readouterr()
    # stdout: the Markdown only (ready to paste); stderr: the running table
    preamble, blank, header, rule, *rows = printed.out.strip().splitlines()
    assert blank == "" and rule.startswith("|---|")
    assert "UTC" in preamble and f"{os.cpu_count()} CPU cores" in preamble
    assert f"Paddle {paddle.__version__}" in preamble
    assert f"paddle_momentum {paddle_momentum.__version__}" in preamble
    assert preamble.endswith("`python -m paddle_momentum bench " + " ".join(argv) + "`")
    assert [_cells(row)[0] for row in rows] == ["many-small"]
    table = dict(zip(_cells(header), _cells(rows[0])))
    # the running table's rows: workload, candidate, median ms, x builtin, ...
    ran = {fields[1]: fields for fields in map(str.split, printed.err.splitlines())
           if fields[:1] == ["many-small"]}
    assert table["builtin median ms"] == ran["builtin"][2]
    # what ran: --quick's 200 x [512], as the running output's workload line says
    assert table["what ran"] == "200 x [512]"
    assert f"# many-small: {table['what ran']};" in printed.err
    others = [label for label in ran if label != "builtin"]
    assert others and [f"{label} x builtin" for label in others] == list(table)[3:]
    for label in others:
        assert table[f"{label} x builtin"] == ran[label][3]
        # ... the medians' ratio (each median rounded to 0.005 ms where printed)
        median, builtin = float(ran[label][2]), float(ran["builtin"][2])
        bound = 0.005 * (1 / builtin + median / builtin**2) + 0.005
        assert abs(float(table[f"{label} x builtin"]) - median / builtin) <= bound


def test_quick_labels_say_what_runs():
    """Each workload's line names the shapes that run (here --quick's), from those shapes."""
    for name, quick in (("many-small", True), ("many-small", False), ("one-big", True),
                        ("settings-freeze", True)):
        workload = bench_cases.WORKLOADS[name]
        shapes = workload.shapes(quick)
        text = bench._describe(workload, quick)
        assert "--quick" not in text
        assert f"; {len(shapes)} tensor" in text
        size = shapes[0][0]
        assert (f"{len(shapes)} x [{size}]" in text if len(shapes) > 1
                else f"one vector of {size:,} elements" in text)
    assert bench_cases.many_small_shapes(True) == [[512]] * 200
    assert bench_cases.one_big_shapes(True) == [[2**20]]
    freeze = bench._describe(bench_cases.WORKLOADS["settings-freeze"], True)
    assert f"the first {len(bench_cases.settings_shapes(True)) // 3} parameters" in freeze
