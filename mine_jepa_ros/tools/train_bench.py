"""``mine-jepa bench-train``: pretraining throughput and data wait, for 1 and N processes.

Runs real ``mine-jepa pretrain`` processes — one plain process, and torchrun with each requested
process count — on the same patch store (a simulated one unless given) for two epochs of
``steps`` steps, and reads the second epoch's line of their ``metrics.csv`` (the first includes
start-up and warm-up): patches per second over the whole global batch, and the share of each step
spent waiting for the prefetch thread to hand over the next batch. The goal is a data wait below
10 % (on a GPU, where the model no longer hides the loading). Every process count trains the very
same global batches (DDP), so the rates compare like with like.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DATA_WAIT_GOAL = 0.10


@dataclass
class TrainBenchConfig:
    store: Path | None = None  # None: simulate one
    arch: str = "vit_small"
    views: int = 4
    batch_size: int = 64
    steps: int = 5
    processes: Sequence[int] = field(default_factory=lambda: (2,))
    device: str = "auto"
    precision: str = "auto"
    method: str = "sigreg"
    surveys: int = 4  # of the simulated store


def _pretrain_command(nproc: int, store: Path, out: Path, cfg: TrainBenchConfig) -> list[str]:
    args = ["pretrain", "--store", str(store), "--out", str(out), "--method", cfg.method, "--arch", cfg.arch,
            "--views", str(cfg.views), "--batch-size", str(cfg.batch_size), "--epochs", "2",
            "--steps-per-epoch", str(cfg.steps), "--warmup-epochs", "0.5", "--device", cfg.device,
            "--precision", cfg.precision]
    if nproc == 1:
        return [sys.executable, "-m", "mine_jepa_ros.cli", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
            "mine_jepa_ros.cli", *args]


def measure(nproc: int, store: Path, out: Path, cfg: TrainBenchConfig) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(_pretrain_command(nproc, store, out, cfg), env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"processes": nproc, "error": f"exit {proc.returncode}: {tail}"}
    with (out / "metrics.csv").open() as f:
        second = list(csv.DictReader(f))[-1]
    return {"processes": nproc, "patches_per_s": float(second["patches_per_s"]),
            "data_wait_fraction": float(second["data_wait_fraction"]), "seconds_per_epoch": float(second["seconds"]),
            "loss": float(second["loss"])}


def run_train_bench(cfg: TrainBenchConfig) -> dict[str, Any]:
    from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator

    with tempfile.TemporaryDirectory(prefix="mine_jepa_bench_train_") as tmp_name:
        tmp = Path(tmp_name)
        store = cfg.store or extract_simulator(tmp / "store", SimExtractConfig(surveys=cfg.surveys), progress=False).path
        runs = [measure(n, store, tmp / f"run{n}", cfg) for n in (1, *[p for p in cfg.processes if p != 1])]
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    waits = [r["data_wait_fraction"] for r in runs if "data_wait_fraction" in r]
    return {"config": {**asdict(cfg), "store": str(cfg.store) if cfg.store else f"simulated ({cfg.surveys} surveys)",
                       "processes": list(cfg.processes)},
            "device": device, "cpu_cores": os.cpu_count(), "runs": runs,
            "goal": {"data_wait_fraction < 0.10": (max(waits) < DATA_WAIT_GOAL) if waits else None}}


def format_train_bench(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [f"pretraining {c['method']} {c['arch']}, {c['views']} views, global batch {c['batch_size']}, "
             f"{c['steps']} steps per epoch (2nd epoch measured), device {r['device']}, {r['cpu_cores']} CPU cores, "
             f"store: {c['store']}"]
    base = next((x["patches_per_s"] for x in r["runs"] if x["processes"] == 1 and "patches_per_s" in x), None)
    for run in r["runs"]:
        if "error" in run:
            lines.append(f"  {run['processes']} process(es): failed: {run['error']}")
            continue
        speedup = f", {run['patches_per_s'] / base:.2f}x one process" if base and run["processes"] != 1 else ""
        lines.append(f"  {run['processes']} process(es): {run['patches_per_s']:8.1f} patches/s, data wait "
                     f"{100 * run['data_wait_fraction']:.1f}% of each step{speedup}")
    verdict = {True: "met", False: "NOT met", None: "-"}[r["goal"]["data_wait_fraction < 0.10"]]
    lines.append(f"  goal: data wait < 10% — {verdict}")
    return "\n".join(lines)
