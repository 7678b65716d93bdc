"""``mine-jepa calibrate``: an operating point chosen on validation surveys, carried by the checkpoint.

1. Every validation bag (surveys with ground truth, never the test ones) runs through the
   detection pipeline; its windows' probabilities and truth are kept (:class:`SceneCollector`).
2. **Temperature**: one scalar ``T`` minimising the negative log-likelihood of the windows' true
   labels under ``softmax(log p / T)`` (``log p`` equals the logits up to a per-window constant,
   which the softmax ignores); the expected calibration error (15 bins of confidence) is
   reported before and after.
3. **Thresholds**, per class, on the calibrated probabilities: detections are re-made at every
   threshold of a fine grid exactly as the pipeline makes them (localised, and with ``rescoring``
   ``centred`` scored again from the windows centred on them, at the same temperature) and scored
   with the replay's matching; the threshold is the one that meets the target: at most ``fa_per_km2`` false alarms
   per km² with the highest Pd; at least ``pd`` with the fewest false alarms; the best F1; or the
   best F-beta (``fbeta``, beta > 1 weighing Pd above precision: a missed mine costs more than a
   false alarm; the demo's choice is beta 2).
   A target no threshold reaches is an error that says what was reachable.
4. The temperature, thresholds, target and the validation numbers go into the checkpoint's
   metadata (``operating_point``), with the recipe they were chosen at (stride, flip views,
   rescoring), written atomically to ``out``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.evaluate.folder_replay import image_scenes
from mine_jepa_ros.detect.merging import Thresholds, merger_for
from mine_jepa_ros.detect.backends import load_detector
from mine_jepa_ros.detect.model import save_checkpoint
from mine_jepa_ros.detect.operating_point import TARGETS, OperatingPoint
from mine_jepa_ros.detect.pipeline import DetectionPipeline
from mine_jepa_ros.detect.rescore import CentredRescorer
from mine_jepa_ros.evaluate.replay import ReplayOptions, SceneCollector
from mine_jepa_ros.evaluate.scoring import (
    DetectionMetrics,
    FrocPoint,
    MatchGate,
    Scene,
    Scorer,
    f_beta,
    token_truth,
    window_truth,
)
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.bag import ReadStats
from mine_jepa_ros.io.recording import Recording, open_recording

THRESHOLD_GRID: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.05, 0.996, 0.01), 3))
ECE_BINS = 15


class CalibrationError(UserError):
    """Validation data that cannot give the asked-for operating point (no truth, target out of reach)."""


@dataclass(frozen=True)
class Target:
    kind: str  # one of TARGETS
    value: float | None = None  # fa_per_km2, pd, or fbeta's beta; None for f1

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise UserError(f"target {self.kind!r}: expected one of {TARGETS}")
        if self.kind != "f1" and (self.value is None or self.value < 0 or (self.kind == "pd" and self.value > 1)
                                  or (self.kind == "fbeta" and self.value == 0)):
            raise UserError(f"target {self.kind} needs a value (>= 0; a Pd at most 1, a beta above 0), "
                            f"got {self.value}")

    def describe(self) -> str:
        if self.kind == "fa_per_km2":
            return f"at most {self.value:g} false alarms per km2, best Pd"
        if self.kind == "fbeta":
            return f"best F-beta, beta {self.value:g}"
        return f"Pd at least {self.value:g}, fewest false alarms" if self.kind == "pd" else "best F1"


def softmax_with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def tempered(rescorer: CentredRescorer, temperature: float) -> CentredRescorer:
    """``rescorer`` whose centred windows' probabilities are raised to ``temperature`` as the windows' are:
    calibration classifies with the raw model, and the detector meets both at the fitted temperature."""
    raw = rescorer.predict
    return replace(rescorer, predict=lambda windows: softmax_with_temperature(raw(windows), temperature))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax_with_temperature(probs, temperature)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature (0.05..20) minimising the NLL: a log-spaced grid, then golden-section refinement."""
    grid = np.logspace(math.log10(0.05), math.log10(20.0), 61)
    nll = [negative_log_likelihood(probs, labels, t) for t in grid]
    k = int(np.argmin(nll))
    lo, hi = math.log(grid[max(k - 1, 0)]), math.log(grid[min(k + 1, len(grid) - 1)])
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if negative_log_likelihood(probs, labels, math.exp(a)) < negative_log_likelihood(probs, labels, math.exp(b)):
            hi = b
        else:
            lo = a
    return float(math.exp((lo + hi) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their share of windows."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


@dataclass
class CalibrationReport:
    out: Path
    operating_point: OperatingPoint
    windows: int  # scored windows (window head) or tokens (dense head) the temperature was fitted on
    objects: dict[str, int]
    area_km2: float | None
    stride: int = 64  # the recipe the operating point was chosen at (stored with it)
    flip_views: int = 1
    rescoring: str = "windows"

    def summary(self) -> str:
        op = self.operating_point
        v = op.validation
        lines = [f"{self.out}: operating point for {Target(**op.target).describe()} on {len(v['bags'])} validation "
                 f"survey(s) ({self.windows} scored {v.get('scored', 'windows')}"
                 + (f", {self.area_km2:.4f} km2 of seabed)" if self.area_km2 else ")")
                 + f", windows at stride {self.stride}, {self.flip_views} flip view(s)"
                 + (", detections scored from the windows centred on them" if self.rescoring == "centred" else ""),
                 f"temperature {op.temperature:.3f}: expected calibration error {v['ece_before']:.3f} -> {v['ece_after']:.3f}"]
        for name, t in op.thresholds.items():
            c = v["classes"][name]
            fa = "-" if c["false_alarms_per_km2"] is None else f"{c['false_alarms_per_km2']:.0f}"
            lines.append(f"  {name}: threshold {t:.2f}: Pd {c['pd']:.3f} ({self.objects[name]} objects), precision "
                         f"{c['precision']:.3f}, false alarms {c['false_alarms']} ({fa} per km2)")
        return "\n".join(lines)


def pick_threshold(points: list[FrocPoint], target: Target, name: str) -> FrocPoint:
    """The FROC point (one per threshold) that meets the target for class ``name``."""
    if target.kind == "fa_per_km2":
        assert target.value is not None
        rates = [p.false_alarms_per_km2 for p in points]
        if any(r is None for r in rates):
            raise CalibrationError("a false-alarm target needs the sonar geometry (seabed area): give the bags' "
                               "sonar info, or --slant-resolution, --altitude and --ping-spacing")
        ok = [p for p, r in zip(points, rates) if r is not None and r <= target.value]
        if not ok:
            best = min(r for r in rates if r is not None)
            raise CalibrationError(f"{name}: no threshold gives at most {target.value:g} false alarms per km2 on the "
                                   f"validation surveys (the fewest: {best:.0f} per km2)")
        return max(ok, key=lambda p: (p.pd, -p.false_alarms, -p.threshold))
    if target.kind == "pd":
        assert target.value is not None
        ok = [p for p in points if p.pd >= target.value]
        if not ok:
            best_pd = max(p.pd for p in points)
            raise CalibrationError(f"{name}: no threshold reaches Pd {target.value:g} on the validation surveys "
                                   f"(the highest: {best_pd:.3f})")
        return min(ok, key=lambda p: (p.false_alarms, -p.threshold))
    if target.kind == "fbeta":
        assert target.value is not None
        beta = target.value
        return max(points, key=lambda p: (f_beta(p.precision, p.pd, beta), p.threshold))
    return max(points, key=lambda p: (p.f1, p.threshold))


def choose_operating_points(scorer: Scorer, target: Target) -> tuple[dict[str, FrocPoint], dict[str, int]]:
    """Per object class, the FROC point of the scored scenes that meets ``target``
    (:func:`pick_threshold`), and the objects of each class they hold; a class without objects is an
    error (no threshold can be chosen for it)."""
    names = scorer.class_names[1:]
    objects = {name: sum(t.class_name == name for scene, _ in scorer.scenes for t in scene.truth) for name in names}
    for name in names:
        if objects[name] == 0:
            raise CalibrationError(f"the validation surveys hold no {name} object: no threshold can be chosen for it")
    curves = scorer.froc()
    return {name: pick_threshold(curves[name], target, name) for name in names}, objects


def require_truth(recording: Recording, bag: Path | str) -> None:
    """A recording to score or calibrate on must hold ground truth; else one line naming it."""
    if not recording.has_truth or not recording.truth_messages:
        raise CalibrationError(f"{bag}: no ground truth (a vision_msgs/Detection2DArray topic): surveys scored "
                               "or calibrated on need it")


def collect_scenes(detector: DetectionPipeline, bags: list[Path], opts: ReplayOptions, need_truth: bool = False) -> list[Scene]:
    """The classified windows and ground truth of every bag (one scene per frame, or per ping stream);
    ``need_truth``: a bag without ground truth is an error (it cannot be scored), raised before any
    bag is classified."""
    return [scene for scenes in collect_scenes_by_bag(detector, bags, opts, need_truth) for scene in scenes]


def collect_scenes_by_bag(detector: DetectionPipeline, bags: list[Path], opts: ReplayOptions,
                          need_truth: bool = False) -> list[list[Scene]]:
    """:func:`collect_scenes`, each bag's scenes apart (in the order of ``bags``)."""
    recordings = [(bag, open_recording(bag, opts.recording)) for bag in bags]
    if need_truth:
        for bag, inputs in recordings:
            require_truth(inputs, bag)
    by_bag: list[list[Scene]] = []
    for bag, inputs in recordings:
        pipeline = detector.for_input_mode(inputs.mode)
        collector = SceneCollector(inputs, pipeline.localiser, pipeline.rescorer)
        stats = ReadStats()
        for _t, msg in tqdm(inputs.messages(stats), desc=f"classify {Path(bag).name}", unit="img",
                            disable=not opts.progress):
            output = pipeline.process(msg)
            if output is not None:
                collector.add(output)
        final = pipeline.flush()
        if final is not None:
            collector.add(final)
        by_bag.append([scene for scene, _dets, _labels in collector.finish(pipeline)])
    return by_bag


def score_scenes(scenes: list[Scene], thresholds: Thresholds, class_names: list[str], window: int,
                 gate: MatchGate) -> DetectionMetrics:
    """The replay's metrics for scenes whose windows are already classified, at ``thresholds``:
    the detections are made as the pipeline makes them."""
    scorer = Scorer(class_names, window, gate)
    for scene in scenes:
        merger = merger_for(scene.probabilities, window, class_names)
        labels = merger.add(scene.positions, scene.probabilities, thresholds)  # labels each window once
        scorer.add(scene, scene.located(merger.flush(), thresholds), labels)
    return scorer.metrics(thresholds)


def evaluate_detector(model_path: Path | str, bags: list[Path], opts: ReplayOptions,
                      scenes: Sequence[Scene] = ()) -> DetectionMetrics:
    """A checkpoint as a detector at its thresholds in force (``opts.detector.thresholds``, else its operating
    point) over several bags with ground truth, scored together (the replay's metrics, FROC included).
    ``scenes``: more, already classified by the same model and options (replays of other bags:
    :attr:`~mine_jepa_ros.evaluate.replay.ReplayResult.scenes`), scored first, with them."""
    detector = load_detector(model_path, opts.detector)
    collected = list(scenes) + collect_scenes(detector, bags, opts, need_truth=True)
    return score_scenes(collected, detector.thresholds, detector.class_names, detector.window,
                        MatchGate(opts.match_distance_m, opts.match_pixels))


@dataclass(frozen=True)
class BagScore:
    """One bag of a scored campaign on its own, at the same thresholds: how the detector holds from
    one survey (its sonar setting, its seabed) to the next."""

    bag: str
    geometry: SonarGeometry | None
    metrics: DetectionMetrics

    def to_dict(self) -> dict[str, Any]:
        unit = self.metrics.unit
        return {"bag": self.bag, "geometry": None if self.geometry is None else asdict(self.geometry),
                "area_km2": self.metrics.area_km2,
                "detections": {name: d.to_dict(unit) for name, d in self.metrics.detections.items()}}


def format_per_bag(scores: Sequence[BagScore]) -> str:
    """One line per bag: its sonar geometry, and per class Pd (found / objects) and precision."""
    names = list(scores[0].metrics.detections) if scores else []
    lines = ["per bag, at the same thresholds:",
             f"{'bag':24s} {'altitude':>8s} {'range res.':>10s}"
             + "".join(f"  {name + ' Pd (found/objects)':>24s} {'precision':>9s}" for name in names)]
    for score in scores:
        g = score.geometry
        row = (f"{Path(score.bag).name[:24]:24s} {f'{g.altitude_m:.2f} m' if g else '-':>8s} "
               f"{f'{g.slant_resolution_m * 100:.1f} cm' if g else '-':>10s}")
        for name in names:
            d = score.metrics.detections[name]
            row += f"  {f'{d.pd:.2f} ({d.matched}/{d.objects})':>24s} {d.precision:9.2f}"
        lines.append(row)
    return "\n".join(lines)


def evaluate_campaign(model_path: Path | str, bags: list[Path],
                      opts: ReplayOptions) -> tuple[DetectionMetrics, list[BagScore]]:
    """:func:`evaluate_detector` over ``bags`` together, and each bag scored on its own (every bag
    classified once)."""
    detector = load_detector(model_path, opts.detector)
    by_bag = collect_scenes_by_bag(detector, bags, opts, need_truth=True)
    gate = MatchGate(opts.match_distance_m, opts.match_pixels)

    def scored(scenes: list[Scene]) -> DetectionMetrics:
        return score_scenes(scenes, detector.thresholds, detector.class_names, detector.window, gate)

    together = scored([scene for scenes in by_bag for scene in scenes])
    per_bag = [BagScore(str(bag), scenes[0].geometry if scenes else None, scored(scenes))
               for bag, scenes in zip(bags, by_bag)]
    return together, per_bag


def _scored_outputs(scenes: list[Scene], window: int, names: list[str],
                    shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The true labels and class probabilities the temperature is fitted on: every scorable
    window's, or for a dense head every scorable token's."""
    labels, probs = [], []
    for s in scenes:
        if len(shape) == 1:
            truth, p = window_truth(s.positions, window, s.truth, names), s.probabilities
        else:
            truth = token_truth(s.positions, window, shape[-1], s.truth, names).reshape(-1)
            p = s.probabilities.transpose(0, 2, 3, 1).reshape(-1, len(names))
        labels.append(truth[truth >= 0])
        probs.append(p[truth >= 0])
    return np.concatenate(labels), np.concatenate(probs)


def calibrate(model_path: Path | str, bags: list[Path], out: Path | str, target: Target,
              options: ReplayOptions | None = None,
              folders: Sequence[tuple[Path, Sequence[str]]] = ()) -> CalibrationReport:
    """Choose and store the operating point on validation ``bags`` and labelled image ``folders``
    (each with the survey years to keep, () for all); ``options`` give the bags' topics, geometry and
    the gate."""
    opts = options or ReplayOptions()
    if not bags and not folders:
        raise CalibrationError("no validation bag or image folder given")
    detector = load_detector(model_path, replace(opts.detector, raw=True))  # the raw model: T = 1
    scenes = collect_scenes(detector, bags, opts, need_truth=True)
    for folder, years in folders:
        found = image_scenes(detector, Path(folder), years, opts.progress)
        if not found:
            raise CalibrationError(f"{folder}: no labelled image (a .txt or a mask beside it) to calibrate on")
        scenes += found
    names = detector.class_names
    shape = detector.classifier.metadata.output_shape
    labels, raw = _scored_outputs(scenes, detector.window, names, shape)
    if len(labels) == 0:
        raise CalibrationError("the validation surveys gave no scorable window")
    temperature = fit_temperature(raw, labels)
    ece_before = expected_calibration_error(raw, labels)
    ece_after = expected_calibration_error(softmax_with_temperature(raw, temperature), labels)

    calibrated = [replace(s, probabilities=softmax_with_temperature(s.probabilities, temperature),
                          rescorer=None if s.rescorer is None else tempered(s.rescorer, temperature)) for s in scenes]
    scorer = Scorer(names, detector.window, MatchGate(opts.match_distance_m, opts.match_pixels),
                    froc_thresholds=THRESHOLD_GRID)
    for s in calibrated:
        scorer.add(s, [], np.zeros(len(s.positions), np.int64))
    chosen, objects = choose_operating_points(scorer, target)
    thresholds = {name: float(point.threshold) for name, point in chosen.items()}
    per_class = {name: {k: getattr(point, k) for k in ("pd", "false_alarms", "false_alarms_per_km2", "precision", "f1")}
                 for name, point in chosen.items()}
    op = OperatingPoint(
        temperature=temperature, thresholds=thresholds, target={"kind": target.kind, "value": target.value},
        validation={"bags": [str(b) for b in bags] + [str(f) for f, _years in folders], "ece_before": ece_before, "ece_after": ece_after,
                    "windows": int(len(labels)), "scored": "windows" if len(shape) == 1 else "tokens",
                    "area_km2": scorer.area_km2, "classes": per_class,
                    "match": {"gate": scorer.gate_value, "unit": scorer.unit}},
    )
    op.check(names, str(model_path))
    torch_classifier = detector.classifier
    assert isinstance(torch_classifier, PatchClassifier)  # load_detector(raw=True) runs checkpoints on torch
    model = torch_classifier.model
    # the recipe the thresholds were chosen with travels with them
    model.metadata = replace(model.metadata, operating_point=op.to_dict(), stride=detector.stride,
                             flip_views=detector.flip_views, rescoring=detector.rescoring)
    save_checkpoint(out, model, {"calibrated_from": str(model_path)})
    return CalibrationReport(Path(out), op, int(len(labels)), objects, scorer.area_km2, detector.stride,
                             detector.flip_views, detector.rescoring)

