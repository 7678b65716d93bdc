"""``mine-jepa bench`` backends: torch and ONNX Runtime side by side, each in a process of its own.

For one model (a ViT-Tiny, random init unless a checkpoint is given) the parent exports the ONNX
fp32 model and the INT8 ones (dynamic; static calibrated on the survey's windows), writes a
simulated 2 x ``samples_per_side`` survey to a ``.npy`` file, and starts one fresh Python process
per backend, which measures:

* ``startup_s``: from the moment the parent started the process to the first detection out of
  the node's pipeline (interpreter, imports, model load, one frame of ``window`` pings) — what a
  node pays before it can publish (rclpy's own start-up comes on top);
* ``windows_per_s``: classification of the survey's windows at the node's batch size (best of
  ``repeats``);
* ``real_time_factor``: the ping-by-ping streaming path, one ping per message, sonar seconds at
  ``ping_rate_hz`` per processing second;
* ``peak_rss_mib``: the process's peak resident memory (a process that ran only that backend);
* ``torch_imported``: whether torch ended up in the process at all.

The ONNX Runtime processes run in the runtime-only environment when one is given (``make
runtime``'s ``.venv-runtime``); its installed size is measured as the files of ``mine_jepa_ros``
and of every package its runtime requirements pull in, recursively (the ROS 2 wheels and their
build tools are not counted). Goals: INT8 >= 1.1x the best torch backend and >= 2x torch fp32 in
windows/s; runtime install <= 500 MB; ONNX start-up <= 2 s; ONNX peak memory <= 300 MiB.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig, WindowClassifier
from mine_jepa_ros.detect.tiling import WaterfallTiler
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory

BACKEND_LABELS = ("torch fp32", "torch auto", "onnxruntime fp32", "onnxruntime int8-dynamic", "onnxruntime int8-static")

GOALS = {
    "int8_vs_best_torch": 1.1,
    "int8_vs_torch_fp32": 2.0,
    "runtime_install_mb": 500.0,
    "onnx_startup_s": 2.0,
    "onnx_peak_rss_mib": 300.0,
}


@dataclass(frozen=True)
class BackendRun:
    """One backend to measure: a label, the model file and how to run it."""

    label: str
    model: str
    backend: str  # torch | onnxruntime
    precision: str = "auto"
    python: str = sys.executable


def streaming_rate(classifier: WindowClassifier, rows: np.ndarray, ping_rate_hz: float) -> dict[str, float]:
    """The ping-by-ping path: one height-1 Image per ping through a pings-mode pipeline."""
    pipe = DetectionPipeline(classifier, PipelineConfig("pings", thresholds=0.5))
    factory = MessageFactory.for_rosbags()
    msgs = [encode_image(factory, rows[i : i + 1], factory.header(i, "sss")) for i in range(len(rows))]
    pipe.process(msgs[0])
    start = time.perf_counter()
    for msg in msgs[1:]:
        pipe.process(msg)
    seconds = time.perf_counter() - start
    return {"pings": len(msgs) - 1, "seconds": seconds, "real_time_factor": (len(msgs) - 1) / ping_rate_hz / seconds,
            "windows_per_second": pipe.stats.windows / seconds}


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec (ru_maxrss
    does not: it keeps the high-water mark of the parent that forked this process)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(run: BackendRun, survey_npy: Path, launched_unix: float, batch_size: int, stream_pings: int,
            ping_rate_hz: float, repeats: int) -> dict[str, Any]:
    """Run in the child process: start-up to the first detection, throughput, streaming, memory."""
    from mine_jepa_ros.detect.backends import DetectorOptions, load_detector

    options = DetectorOptions(run.backend, ("cpu",) if run.backend == "onnxruntime" else (), "cpu", run.precision,
                              batch_size, thresholds=0.0)  # a threshold of 0: every window is a detection
    frame_pipe = load_detector(run.model, options, PipelineConfig("frames"))
    clf = frame_pipe.classifier
    image = np.load(survey_npy, mmap_mode="r")
    factory = MessageFactory.for_rosbags()
    first_frame = encode_image(factory, np.ascontiguousarray(image[: clf.window]), factory.header(0, "sss"))
    first = frame_pipe.process(first_frame)
    startup = time.time() - launched_unix
    assert first is not None and first.detections, "a threshold of 0 makes every window a detection"
    windows = WaterfallTiler(clf.window, clf.stride).tile(np.asarray(image, np.float32) / 255.0).patches
    clf.predict(windows[:batch_size])  # warm-up at the batch size
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        clf.predict(windows)
        rates.append(len(windows) / (time.perf_counter() - start))
    stream = streaming_rate(clf, np.ascontiguousarray(image[:stream_pings]), ping_rate_hz)
    return {"label": run.label, "backend": run.backend, "device": clf.device_name, "precision": clf.precision_name,
            "startup_s": startup, "windows": int(len(windows)), "windows_per_s": max(rates),
            "real_time_factor": stream["real_time_factor"], "streaming_windows_per_s": stream["windows_per_second"],
            "peak_rss_mib": peak_rss_mib(),
            "torch_imported": "torch" in sys.modules, "python": sys.executable}


def run_child(run: BackendRun, survey_npy: Path, batch_size: int, stream_pings: int, ping_rate_hz: float,
              repeats: int, threads: int) -> dict[str, Any]:
    """Start a fresh process for ``run`` and return what it measured (or its error)."""
    spec = json.dumps({"run": asdict(run), "survey": str(survey_npy), "batch_size": batch_size, "stream_pings": stream_pings,
                       "ping_rate_hz": ping_rate_hz, "repeats": repeats})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(OMP_NUM_THREADS=str(threads))  # the same thread budget for every backend
    launched = time.time()
    proc = subprocess.run([run.python, "-m", "mine_jepa_ros.tools.backend_bench", spec, repr(launched)], env=env,
                          capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"label": run.label, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def installed_size(python: str) -> dict[str, Any]:
    """Size of ``mine_jepa_ros`` and the closure of its runtime requirements in ``python``'s environment."""
    script = r"""
import importlib.metadata as md, json, re
from packaging.requirements import Requirement
seen, sizes, todo = set(), {}, ["mine_jepa_ros"]
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen:
        continue
    seen.add(name)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    sizes[name] = sum((f.size or 0) for f in (dist.files or []))
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
print(json.dumps(sizes))
"""
    proc = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    sizes = json.loads(proc.stdout)
    torch_absent = subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=120).returncode != 0
    return {"python": python, "total_mb": sum(sizes.values()) / 1e6, "torch_importable": not torch_absent,
            "packages_mb": {k: round(v / 1e6, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])}}


@dataclass
class BackendBenchConfig:
    checkpoint: Path | None = None  # None: a random-init ViT-Tiny (speed does not depend on the weights)
    pings: int = 1024
    samples_per_side: int = 1024
    batch_size: int = 64
    stream_pings: int = 384
    ping_rate_hz: float = 15.0
    repeats: int = 2
    threads: int = 0  # 0: all cores
    runtime_python: str | None = None  # the runtime-only environment's interpreter, for ONNX Runtime and the size
    seed: int = 0
    labels: Sequence[str] = BACKEND_LABELS


def run_backend_bench(cfg: BackendBenchConfig) -> dict[str, Any]:
    from mine_jepa_ros.deploy.export import export_onnx
    from mine_jepa_ros.detect.model import new_classifier, save_checkpoint
    from mine_jepa_ros.deploy.quantise import CheckWindows
    from mine_jepa_ros.sim.survey import SurveyConfig, simulate_survey

    unknown = sorted(set(cfg.labels) - set(BACKEND_LABELS))
    if unknown:
        raise UserError(f"unknown backend(s) {unknown}; expected some of {list(BACKEND_LABELS)}")
    threads = cfg.threads or (os.cpu_count() or 1)
    ort_python = cfg.runtime_python or sys.executable
    with tempfile.TemporaryDirectory(prefix="mine_jepa_backends_") as tmp_name:
        tmp = Path(tmp_name)
        survey = simulate_survey(SurveyConfig(pings=cfg.pings, samples_per_side=cfg.samples_per_side, seed=cfg.seed))
        image = survey.to_uint8()
        np.save(tmp / "survey.npy", image)
        ckpt = cfg.checkpoint or save_checkpoint(tmp / "model.safetensors", new_classifier("vit_tiny", seed=cfg.seed))
        fp32 = export_onnx(ckpt, tmp / "model.onnx").path
        windows = WaterfallTiler().tile(image.astype(np.float32) / 255.0).patches
        calibration = CheckWindows(windows, np.full(len(windows), -1), "the bench survey")
        models = {"fp32": fp32}
        for mode in ("dynamic", "static"):
            if f"onnxruntime int8-{mode}" in cfg.labels:
                models[mode] = export_onnx(ckpt, tmp / f"model.{mode}.onnx", int8=mode, calibration=calibration).path
        runs = {
            "torch fp32": BackendRun("torch fp32", str(ckpt), "torch", "fp32"),
            "torch auto": BackendRun("torch auto", str(ckpt), "torch", "auto"),
            **{f"onnxruntime {'fp32' if key == 'fp32' else 'int8-' + key}":
               BackendRun(f"onnxruntime {'fp32' if key == 'fp32' else 'int8-' + key}", str(path), "onnxruntime",
                          python=ort_python) for key, path in models.items()},
        }
        results = {label: run_child(runs[label], tmp / "survey.npy", cfg.batch_size, cfg.stream_pings, cfg.ping_rate_hz,
                                    cfg.repeats, threads) for label in cfg.labels}
    out: dict[str, Any] = {"config": {**asdict(cfg), "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else "random vit_tiny",
                                      "threads": threads, "labels": list(cfg.labels)},
                           "backends": results}
    out["runtime_install"] = installed_size(cfg.runtime_python) if cfg.runtime_python else None
    out["goals"] = judge(results, out["runtime_install"])
    return out


def judge(results: dict[str, dict[str, Any]], install: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each goal with its measured value and whether it is met (None: not measured)."""
    def rate(label: str) -> float | None:
        r = results.get(label, {})
        return r.get("windows_per_s")

    int8, fp32, auto = rate("onnxruntime int8-dynamic"), rate("torch fp32"), rate("torch auto")
    best_torch = max((r for r in (fp32, auto) if r), default=None)
    onnx = results.get("onnxruntime int8-dynamic", {})
    values = {
        "int8_vs_best_torch": int8 / best_torch if int8 and best_torch else None,
        "int8_vs_torch_fp32": int8 / fp32 if int8 and fp32 else None,
        "runtime_install_mb": install.get("total_mb") if install else None,
        "onnx_startup_s": onnx.get("startup_s"),
        "onnx_peak_rss_mib": onnx.get("peak_rss_mib"),
    }
    out = {}
    for name, goal in GOALS.items():
        value = values[name]
        at_least = name.startswith("int8")
        met = None if value is None else (value >= goal if at_least else value <= goal)
        out[name] = {"value": value, "goal": f"{'>=' if at_least else '<='} {goal:g}", "met": met}
    return out


def format_backend_bench(r: dict[str, Any]) -> str:
    cfg = r["config"]
    lines = [f"backends: {cfg['checkpoint']}, batch {cfg['batch_size']}, {cfg['threads']} threads, "
             f"2 x {cfg['samples_per_side']} samples at {cfg['ping_rate_hz']:g} pings/s; one process per backend",
             f"  {'backend':26s} {'windows/s':>9s} {'x real time':>11s} {'start-up':>9s} {'peak MiB':>9s}  device"]
    for label, b in r["backends"].items():
        if "error" in b:
            lines.append(f"  {label:26s} failed: {b['error']}")
            continue
        lines.append(f"  {label:26s} {b['windows_per_s']:9.0f} {b['real_time_factor']:11.1f} {b['startup_s']:8.2f}s "
                     f"{b['peak_rss_mib']:9.0f}  {b['device']} ({b['precision']}){'' if b['torch_imported'] else ', no torch'}")
    install = r.get("runtime_install")
    if install and "total_mb" in install:
        top = ", ".join(f"{k} {v:g}" for k, v in list(install["packages_mb"].items())[:6])
        lines.append(f"  runtime-only install: {install['total_mb']:.0f} MB ({top}, ...); torch importable: "
                     f"{install['torch_importable']}")
    for name, g in r["goals"].items():
        value = "not measured" if g["value"] is None else f"{g['value']:.2f}"
        verdict = {True: "met", False: "NOT met", None: "-"}[g["met"]]
        lines.append(f"  goal {name:20s} {value:>12s} (goal {g['goal']}): {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: ``python -m mine_jepa_ros.tools.backend_bench SPEC_JSON LAUNCHED_UNIX``."""
    args = list(sys.argv[1:] if argv is None else argv)
    spec, launched = json.loads(args[0]), float(args[1])
    result = measure(BackendRun(**spec["run"]), Path(spec["survey"]), launched, spec["batch_size"], spec["stream_pings"],
                     spec["ping_rate_hz"], spec["repeats"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
