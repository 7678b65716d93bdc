"""Whole-system measurements: ``bench``, ``bench-train`` and ``soak``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mine_jepa_ros.cli.args import Subcommands, add_command, add_device, add_precision, positive_int, print_json
from mine_jepa_ros.errors import UserError


def add_bench(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "bench",
        help="measure the pipeline (vs the bare model, a naive loop) and the backends side by side",
        description="Benchmark on a simulated survey, in one run. pipeline: end-to-end replay windows/s vs the bare "
        "model forward pass on the same windows at the same batch size (goal >= 0.85) and vs a naive batch-1 loop "
        "(goal >= 5x); the streaming path's real-time factor for each architecture; peak memory. backends: torch "
        "fp32 and auto precision, ONNX Runtime fp32 and INT8 (dynamic, static), each in its own process: windows/s "
        "at the batch size, streaming real-time factor, start-up to the first detection, peak memory; and the "
        "runtime-only install's size; goals: INT8 >= 1.1x the best torch and >= 2x torch fp32, install <= 500 MB, "
        "ONNX start-up <= 2 s and peak memory <= 300 MiB.",
    )
    p.add_argument("--section", choices=["all", "pipeline", "backends"], default="all", help="what to measure")
    p.add_argument("--runtime-venv", type=Path, default=None,
                   help="the runtime-only environment (make runtime: .venv-runtime): ONNX Runtime runs there and its "
                   "installed size is measured")
    p.add_argument("--model", type=Path, default=None,
                   help="backends: this checkpoint instead of a random-init ViT-Tiny (the speed does not depend on weights)")
    p.add_argument("--arch", choices=["vit_tiny", "vit_small"], default="vit_tiny", help="model for the throughput ratios")
    p.add_argument("--pings", type=positive_int, default=1024, help="pings in the simulated survey")
    p.add_argument("--samples-per-side", type=positive_int, default=1024, help="samples per channel")
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass")
    add_device(p)
    add_precision(p)
    p.add_argument("--ping-rate", type=float, default=15.0, help="sonar ping rate for the real-time factor")
    p.add_argument("--stream-pings", type=positive_int, default=384, help="pings pushed through the streaming path")
    p.add_argument("--repeats", type=positive_int, default=2, help="interleaved repeats (best is kept)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run_bench_cmd)


def run_bench_cmd(args: argparse.Namespace) -> int:
    from mine_jepa_ros.tools.backend_bench import BackendBenchConfig, format_backend_bench, run_backend_bench
    from mine_jepa_ros.tools.bench import BenchConfig, format_bench, run_bench

    runtime_python = None
    if args.runtime_venv is not None:
        runtime_python = args.runtime_venv / "bin" / "python"
        if not runtime_python.is_file():
            raise UserError(f"{args.runtime_venv}: no bin/python there (make runtime builds .venv-runtime)")
    results: dict[str, object] = {}
    if args.section in ("all", "pipeline"):
        results["pipeline"] = run_bench(BenchConfig(
            arch=args.arch, pings=args.pings, samples_per_side=args.samples_per_side, batch_size=args.batch_size,
            device=args.device, precision=args.precision, ping_rate_hz=args.ping_rate, stream_pings=args.stream_pings,
            repeats=args.repeats))
        if not args.json:
            print(format_bench(results["pipeline"]))  # type: ignore[arg-type]
    if args.section in ("all", "backends"):
        results["backends"] = run_backend_bench(BackendBenchConfig(
            checkpoint=args.model, pings=args.pings, samples_per_side=args.samples_per_side, batch_size=args.batch_size,
            stream_pings=args.stream_pings, ping_rate_hz=args.ping_rate, repeats=args.repeats,
            runtime_python=str(runtime_python) if runtime_python else None))
        if not args.json:
            print(format_backend_bench(results["backends"]))  # type: ignore[arg-type]
    if args.json:
        print_json(results)
    return 0


def add_bench_train(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "bench-train",
        help="pretraining throughput and data wait for 1 and N processes (torchrun)",
        description="Run real pretraining processes - one plain process and torchrun with N processes - on the same "
        "patch store for two short epochs, and report the second epoch's patches/s and the share of each step spent "
        "waiting for data (goal < 10%%). On a GPU machine the defaults are the paper's: ViT-S at 96 px, 4 views, bf16.",
    )
    p.add_argument("--store", type=Path, default=None, help="patch store or shard directory (default: simulate one)")
    p.add_argument("--arch", choices=["vit_tiny", "vit_small"], default="vit_small", help="ViT size")
    p.add_argument("--views", type=positive_int, default=4, help="augmented views per patch")
    p.add_argument("--batch-size", type=positive_int, default=64, help="global batch (split over the processes)")
    p.add_argument("--steps", type=positive_int, default=5, help="steps per epoch (two epochs; the second is measured)")
    p.add_argument("--processes", default="2", help="comma-separated process counts to compare with one process")
    p.add_argument("--method", choices=["sigreg", "vicreg", "simclr", "byol"], default="sigreg", help="SSL objective")
    add_device(p)
    add_precision(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run_bench_train_cmd)


def run_bench_train_cmd(args: argparse.Namespace) -> int:
    from mine_jepa_ros.tools.train_bench import TrainBenchConfig, format_train_bench, run_train_bench

    try:
        processes = tuple(int(n) for n in args.processes.split(",") if n.strip())
    except ValueError as exc:
        raise UserError(f"--processes {args.processes!r}: expected comma-separated counts") from exc
    if not processes or min(processes) < 1:
        raise UserError(f"--processes {args.processes!r}: expected counts >= 1")
    result = run_train_bench(TrainBenchConfig(store=args.store, arch=args.arch, views=args.views,
                                              batch_size=args.batch_size, steps=args.steps, processes=processes,
                                              device=args.device, precision=args.precision, method=args.method))
    print_json(result) if args.json else print(format_train_bench(result))
    return 0 if all("error" not in r for r in result["runs"]) else 1


def add_soak(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "soak",
        help="sustained load on the streaming detector: throughput, memory over time, drops under overload",
        description="Replay a long simulated ping stream through the streaming detector as fast as it can for a "
        "bounded time, sampling resident memory (must stay within 5%% after warm-up), then offer pings faster "
        "than inference through the node's drop-oldest queue and report drops and worst latency.",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="length of the throughput phase")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before memory must stay flat")
    p.add_argument("--samples-per-side", type=positive_int, default=1024, help="samples per channel")
    p.add_argument("--overload-seconds", type=float, default=10.0, help="length of the overload phase")
    p.add_argument("--overload-rate", type=float, default=2000.0, help="pings per second offered in the overload phase")
    p.add_argument("--queue-depth", type=positive_int, default=8, help="node queue depth in the overload phase")
    add_device(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_soak_cmd)


def run_soak_cmd(args: argparse.Namespace) -> int:
    from mine_jepa_ros.tools.soak import SoakConfig, format_soak, run_soak

    cfg = SoakConfig(seconds=args.seconds, warmup_s=args.warmup, sample_every_s=max(0.5, args.seconds / 30),
                     samples_per_side=args.samples_per_side, overload_seconds=args.overload_seconds,
                     overload_rate_hz=args.overload_rate, queue_depth=args.queue_depth, device=args.device)
    report = run_soak(cfg)
    print_json(report.to_dict()) if args.json else print(format_soak(report))
    return 0 if report.flat and report.overload["accounted"] else 1


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_bench(sub)
    add_bench_train(sub)
    add_soak(sub)
