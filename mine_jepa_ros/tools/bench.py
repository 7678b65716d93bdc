"""``mine-jepa bench``: what the pipeline costs beyond the model, measured in one run.

On one simulated survey (written as a rosbag2 of waterfall frames), with one model and batch size:

* ``replay``: end-to-end ``mine-jepa replay`` throughput (bag read, decode, tile, batched
  inference, merge, bag write), in windows per second;
* ``bare_forward``: the model's forward pass alone on the very same windows, already tiled and in
  memory, at the same batch size;
* ``naive_loop``: the obvious implementation, one window at a time (batch 1);
* ``streaming``: real-time factor of the ping-by-ping path for a sonar of ``2 x samples`` samples
  at ``ping_rate`` pings/s, for each architecture (sonar time / processing time);
* ``peak_rss_mib``: the process's peak resident memory.

Ratios: ``replay / bare_forward`` (goal >= 0.85) and ``replay / naive_loop`` (goal >= 5).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.device import autocast_for
from mine_jepa_ros.detect.model import Classifier, new_classifier, save_checkpoint
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.replay import ReplayOptions, replay
from mine_jepa_ros.detect.tiling import WaterfallTiler
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.survey import SurveyConfig, simulate_survey
from mine_jepa_ros.tools.backend_bench import peak_rss_mib, streaming_rate


@dataclass
class BenchConfig:
    arch: str = "vit_tiny"
    pings: int = 1024
    samples_per_side: int = 1024
    batch_size: int = 64
    device: str = "auto"
    precision: str = "auto"
    naive_windows: int = 96
    stream_pings: int = 384
    ping_rate_hz: float = 15.0
    stream_archs: tuple[str, ...] = ("vit_tiny", "vit_small")
    repeats: int = 2
    seed: int = 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward_rate(model: Classifier, patches: np.ndarray, batch_size: int, device: torch.device,
                      dtype: torch.dtype | None) -> float:
    """Windows/s of normalise + forward + softmax on in-memory windows, batched like the pipeline."""
    data = torch.from_numpy(patches)
    with torch.inference_mode(), autocast_for(device, dtype):
        model(model.normalise(data[:batch_size].to(device)))  # warm-up (kernel selection, allocator)
        _sync(device)
        start = time.perf_counter()
        for i in range(0, len(data), batch_size):
            logits = model(model.normalise(data[i : i + batch_size].to(device)))
            torch.softmax(logits.float(), 1).cpu()
        _sync(device)
    return len(data) / (time.perf_counter() - start)


def naive_rate(model: Classifier, image: np.ndarray, n: int, device: torch.device, dtype: torch.dtype | None) -> float:
    """Windows/s of a per-window Python loop: slice, convert, forward at batch 1."""
    positions = WaterfallTiler(model.metadata.window, model.metadata.stride).positions(*image.shape)[:n]
    w = model.metadata.window
    with torch.inference_mode(), autocast_for(device, dtype):
        model(model.normalise(torch.zeros(1, w, w, device=device)))  # warm-up
        start = time.perf_counter()
        for r, c in positions:
            patch = torch.tensor(image[r : r + w, c : c + w], dtype=torch.float32, device=device)[None]
            torch.softmax(model(model.normalise(patch)).float(), 1).cpu()
        _sync(device)
    return len(positions) / (time.perf_counter() - start)


def streaming_rtf(arch: str, cfg: BenchConfig, rows: np.ndarray) -> dict[str, float]:
    """Sonar seconds per processing second for the ping-by-ping path."""
    clf = PatchClassifier(new_classifier(arch, seed=cfg.seed), device=cfg.device, batch_size=cfg.batch_size,
                          precision=cfg.precision)
    return streaming_rate(clf, rows, cfg.ping_rate_hz)


def run_bench(cfg: BenchConfig | None = None) -> dict[str, Any]:
    cfg = cfg or BenchConfig()
    torch.manual_seed(cfg.seed)
    survey = simulate_survey(SurveyConfig(pings=cfg.pings, samples_per_side=cfg.samples_per_side, seed=cfg.seed))
    image_u8 = survey.to_uint8()
    image = image_u8.astype(np.float32) / 255.0
    results: dict[str, Any] = {"config": cfg.__dict__ | {"stream_archs": list(cfg.stream_archs)},
                               "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="mine_jepa_bench_") as tmp:
        tmp_path = Path(tmp)
        model = new_classifier(cfg.arch, seed=cfg.seed)
        ckpt = save_checkpoint(tmp_path / "model.safetensors", model)
        bag = write_survey_bag(survey, tmp_path / "survey", SurveyBagOptions(frame_height=cfg.pings))
        clf = PatchClassifier(model, device=cfg.device, batch_size=cfg.batch_size, precision=cfg.precision)
        device, dtype = clf.device, clf.autocast_dtype
        results["device"] = str(device)
        results["precision"] = "bf16" if dtype is not None else "fp32"
        patches = WaterfallTiler(model.metadata.window, model.metadata.stride).tile(image).patches
        results["windows"] = int(len(patches))
        replay_rates, bare_rates = [], []
        for k in range(cfg.repeats):  # interleaved, so drift on a shared machine hits both alike
            r = replay(bag, ckpt, tmp_path / f"out{k}", ReplayOptions(
                detector=DetectorOptions(device=cfg.device, batch_size=cfg.batch_size, precision=cfg.precision,
                                         thresholds=0.5),
                progress=False))
            replay_rates.append(r.windows / r.seconds)
            bare_rates.append(bare_forward_rate(clf.model, patches, cfg.batch_size, device, dtype))
        results["replay_windows_per_s"] = max(replay_rates)
        results["bare_forward_windows_per_s"] = max(bare_rates)
        # The naive loop as one would first write it (fp32), and at the pipeline's own precision.
        results["naive_loop_windows_per_s"] = naive_rate(clf.model, image, cfg.naive_windows, device, None)
        results["naive_loop_same_precision_windows_per_s"] = naive_rate(clf.model, image, cfg.naive_windows, device, dtype)
    results["ratio_replay_vs_bare"] = results["replay_windows_per_s"] / results["bare_forward_windows_per_s"]
    results["ratio_replay_vs_naive"] = results["replay_windows_per_s"] / results["naive_loop_windows_per_s"]
    results["ratio_replay_vs_naive_same_precision"] = (
        results["replay_windows_per_s"] / results["naive_loop_same_precision_windows_per_s"])
    rows = image_u8[: cfg.stream_pings]
    results["streaming"] = {arch: streaming_rtf(arch, cfg, rows) for arch in cfg.stream_archs}
    results["peak_rss_mib"] = peak_rss_mib()
    results["goals"] = {"ratio_replay_vs_bare >= 0.85": results["ratio_replay_vs_bare"] >= 0.85,
                        "ratio_replay_vs_naive >= 5": results["ratio_replay_vs_naive"] >= 5.0}
    return results


def format_bench(r: dict[str, Any]) -> str:
    lines = [
        f"device {r['device']} ({r['precision']}), {r['torch_threads']} torch threads, {r['config']['arch']}, "
        f"batch {r['config']['batch_size']}, "
        f"{r['windows']} windows of a {r['config']['pings']} x {2 * r['config']['samples_per_side']} survey",
        f"  replay end-to-end   {r['replay_windows_per_s']:8.1f} windows/s",
        f"  bare forward pass   {r['bare_forward_windows_per_s']:8.1f} windows/s   ratio {r['ratio_replay_vs_bare']:.2f} (goal >= 0.85)",
        f"  naive batch-1 loop  {r['naive_loop_windows_per_s']:8.1f} windows/s   ratio {r['ratio_replay_vs_naive']:.1f}x (goal >= 5x; fp32)",
        f"  naive, same precision {r['naive_loop_same_precision_windows_per_s']:6.1f} windows/s   ratio "
        f"{r['ratio_replay_vs_naive_same_precision']:.1f}x",
    ]
    for arch, s in r["streaming"].items():
        lines.append(f"  streaming {arch:9s} {s['real_time_factor']:8.1f} x real time at {r['config']['ping_rate_hz']:g} pings/s "
                     f"({s['windows_per_second']:.0f} windows/s)")
    lines.append(f"  peak memory {r['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)
