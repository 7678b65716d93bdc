"""The benchmarks run and judge their goals (at tiny sizes: the numbers themselves are measured by
`mine-jepa bench` / `bench-train`, not asserted)."""

from __future__ import annotations

import pytest

from mine_jepa_ros.tools.backend_bench import BackendBenchConfig, format_backend_bench, judge, run_backend_bench
from mine_jepa_ros.tools.train_bench import TrainBenchConfig, format_train_bench, run_train_bench

pytestmark = pytest.mark.slow  # exports models and starts processes


def test_goals_are_judged_from_the_measurements() -> None:
    results = {"torch fp32": {"windows_per_s": 100.0}, "torch auto": {"windows_per_s": 150.0},
               "onnxruntime int8-dynamic": {"windows_per_s": 210.0, "startup_s": 0.5, "peak_rss_mib": 310.0}}
    goals = judge(results, {"total_mb": 400.0})
    assert goals["int8_vs_torch_fp32"] == {"value": 2.1, "goal": ">= 2", "met": True}
    assert goals["int8_vs_best_torch"]["value"] == pytest.approx(1.4) and goals["int8_vs_best_torch"]["met"] is True
    assert goals["onnx_startup_s"]["met"] is True and goals["onnx_peak_rss_mib"]["met"] is False
    assert goals["runtime_install_mb"]["met"] is True
    assert judge({}, None)["runtime_install_mb"] == {"value": None, "goal": "<= 500", "met": None}


def test_the_backend_bench_runs_each_backend_in_its_own_process() -> None:
    r = run_backend_bench(BackendBenchConfig(pings=160, samples_per_side=160, stream_pings=120, repeats=1,
                                             labels=("torch fp32", "onnxruntime int8-dynamic")))
    torch_run, onnx_run = r["backends"]["torch fp32"], r["backends"]["onnxruntime int8-dynamic"]
    assert "error" not in torch_run and "error" not in onnx_run, r["backends"]
    assert torch_run["torch_imported"] and not onnx_run["torch_imported"]  # the ONNX process never loaded torch
    assert onnx_run["precision"] == "int8-dynamic" and onnx_run["device"] == "CPUExecutionProvider"
    for run in (torch_run, onnx_run):
        assert run["windows_per_s"] > 0 and run["real_time_factor"] > 0 and 0 < run["startup_s"] < 120
        assert 50 < run["peak_rss_mib"] < 4096
    assert r["goals"]["runtime_install_mb"]["met"] is None  # no runtime environment given
    assert "int8-dynamic" in format_backend_bench(r)


def test_the_training_bench_compares_one_and_two_processes() -> None:
    r = run_train_bench(TrainBenchConfig(arch="vit_tiny", views=2, batch_size=8, steps=1, processes=(2,), surveys=2,
                                         device="cpu", precision="fp32"))
    assert [run["processes"] for run in r["runs"]] == [1, 2]
    assert all("error" not in run and run["patches_per_s"] > 0 and 0 <= run["data_wait_fraction"] < 1 for run in r["runs"])
    assert r["device"] == "cpu" and "2 process(es)" in format_train_bench(r)
