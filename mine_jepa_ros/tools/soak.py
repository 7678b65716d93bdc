"""``mine-jepa soak``: sustained load on the streaming detector, with memory watched over time.

Two phases, both bounded in time:

1. *Throughput*: a long simulated ping stream (a survey repeated end to end, so the stream never
   ends early) goes through the ping-mode pipeline as fast as it can; resident memory (RSS) is
   sampled every ``sample_every_s``. Memory must stay flat: the last sample within ``tolerance``
   (5 %) of the first sample after warm-up.
2. *Overload*: pings are offered faster than inference can take them, through the node's
   drop-oldest queue and worker thread; the report gives how many were dropped and the worst
   latency from enqueue to result, which the queue depth bounds.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from mine_jepa_ros.detect.backends import DetectorOptions, load_detector
from mine_jepa_ros.detect.model import new_classifier, save_checkpoint
from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig, PipelineOutput
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.ros.worker import DetectionWorker, DropOldestQueue
from mine_jepa_ros.sim.survey import SurveyConfig, simulate_survey


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc), in MiB."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class SoakConfig:
    seconds: float = 60.0
    warmup_s: float = 10.0
    sample_every_s: float = 2.0
    samples_per_side: int = 1024
    survey_pings: int = 1024
    overload_seconds: float = 10.0
    overload_rate_hz: float = 2000.0
    queue_depth: int = 8
    tolerance: float = 0.05
    device: str = "auto"
    seed: int = 0


@dataclass
class SoakReport:
    pings: int = 0
    windows: int = 0
    detections: int = 0
    seconds: float = 0.0
    memory: list[tuple[float, float]] = field(default_factory=list)  # (t, RSS MiB)
    overload: dict[str, Any] = field(default_factory=dict)
    flat: bool = False
    growth: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"pings": self.pings, "windows": self.windows, "detections": self.detections,
                "seconds": round(self.seconds, 2), "pings_per_s": round(self.pings / max(self.seconds, 1e-9), 1),
                "windows_per_s": round(self.windows / max(self.seconds, 1e-9), 1),
                "memory_mib": [(round(t, 1), round(m, 1)) for t, m in self.memory],
                "memory_growth_after_warmup": round(self.growth, 4), "memory_flat": self.flat, "overload": self.overload}


def run_soak(cfg: SoakConfig | None = None) -> SoakReport:
    cfg = cfg or SoakConfig()
    survey = simulate_survey(SurveyConfig(pings=cfg.survey_pings, samples_per_side=cfg.samples_per_side, seed=cfg.seed))
    rows = survey.to_uint8()
    stamps = survey.ping_stamps_ns()
    factory = MessageFactory.for_rosbags()
    tmp = tempfile.TemporaryDirectory(prefix="mine_jepa_soak_")
    model = save_checkpoint(Path(tmp.name) / "vit_tiny.safetensors", new_classifier("vit_tiny", seed=cfg.seed))
    options = DetectorOptions(device=cfg.device, thresholds=0.5)

    def ping(i: int) -> Any:
        k = i % len(rows)
        return encode_image(factory, rows[k : k + 1], factory.header(int(stamps[k]) + i, "sss"))

    pipe = load_detector(model, options, PipelineConfig("pings", overlay=True))
    report = SoakReport()
    start = time.perf_counter()
    next_sample = 0.0
    i = 0
    while (now := time.perf_counter() - start) < cfg.seconds:
        out = pipe.process(ping(i))
        i += 1
        if out is not None:
            report.detections += len(out.detections)
        if now >= next_sample:
            report.memory.append((now, rss_mib()))
            next_sample += cfg.sample_every_s
    report.seconds = time.perf_counter() - start
    report.memory.append((report.seconds, rss_mib()))
    report.pings = i
    report.windows = pipe.stats.windows
    after = [m for t, m in report.memory if t >= cfg.warmup_s]
    if len(after) >= 2:
        report.growth = (after[-1] - after[0]) / after[0]
        report.flat = abs(report.growth) <= cfg.tolerance
    report.overload = run_overload(cfg, ping, load_detector(model, options, PipelineConfig("pings")))
    tmp.cleanup()
    return report


def run_overload(cfg: SoakConfig, ping: Any, pipe: DetectionPipeline) -> dict[str, Any]:
    """Offer pings at ``overload_rate_hz`` through the node's queue + worker; count drops, worst latency."""
    q = DropOldestQueue(cfg.queue_depth)
    results: list[PipelineOutput] = []
    worker = DetectionWorker(pipe, q, results.append)
    worker.start()
    offered = 0
    start = time.perf_counter()
    period = 1.0 / cfg.overload_rate_hz
    while time.perf_counter() - start < cfg.overload_seconds:
        q.put(ping(offered))
        offered += 1
        time.sleep(period)
    worker.stop(flush=False)
    return {"offered": offered, "processed": pipe.stats.received, "dropped": q.dropped,
            "gaps_flushed": worker.stats.gaps, "max_latency_s": round(worker.stats.max_latency_s, 3),
            "queue_depth": cfg.queue_depth, "rate_hz": cfg.overload_rate_hz,
            "accounted": offered == pipe.stats.received + q.dropped + len(q)}


def format_soak(r: SoakReport) -> str:
    d = r.to_dict()
    mem = ", ".join(f"{m:.0f}" for _, m in r.memory[:: max(1, len(r.memory) // 10)])
    o = d["overload"]
    return "\n".join([
        f"throughput: {d['pings']} pings ({d['pings_per_s']}/s), {d['windows']} windows ({d['windows_per_s']}/s), "
        f"{d['detections']} detections in {d['seconds']} s",
        f"memory (RSS MiB over time): {mem}; growth after warm-up {100 * d['memory_growth_after_warmup']:.1f}% "
        f"-> {'flat' if d['memory_flat'] else 'NOT flat'}",
        f"overload at {o['rate_hz']:g} pings/s: offered {o['offered']}, processed {o['processed']}, dropped {o['dropped']} "
        f"(queue depth {o['queue_depth']}), worst latency {o['max_latency_s']} s, all accounted for: {o['accounted']}",
    ])
