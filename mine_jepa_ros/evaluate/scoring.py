"""Scoring a detector as mine countermeasures judge one, and its windows as the paper does.

**Detections.** A detection matches a ground-truth object of its class when their centres lie
within a gate: ``MatchGate.metres`` (2 m) where the sonar geometry is known, else
``MatchGate.pixels``; matching is one-to-one, greedy by descending score, each detection taking
the nearest free object in its gate. Per class: Pd = matched objects / objects, precision =
matched detections / detections, false alarms = unmatched detections, false alarms per km² of
seabed covered (area = track length × ground-range swath on both sides, the nadir gap excluded),
the localisation error of matched detections (m, or pixels without geometry), AP (the area under
precision/recall of every detection the windows make at the lowest threshold, ranked by score,
precision made monotone: the figure detection papers report), Wilson 95 % intervals of Pd and
precision (:func:`wilson_interval`: what a test set of that many objects can tell) and the FROC curve:
Pd against false alarms per km² as the threshold sweeps, the detections re-made from the stored
window probabilities at each threshold exactly as the pipeline makes them
(:func:`~mine_jepa_ros.detect.merging.detections_from_windows`).

**Errors, by cause** (at the operating point; :func:`error_causes`). Each false alarm is
``other_class`` when its centre lies within the gate of an object of another class (the object was
found and called the wrong class: a confusion), ``duplicate`` when within the gate of an object of
its class that another detection matched, ``near_object`` when within twice the gate of any object
(displaced from it, or on its shadow), else ``seabed``. Each missed object is ``other_class`` when a
detection of another class lies within the gate, ``displaced`` when one of its own class lies
within twice the gate, else ``not_detected``.

A detector that makes its own scored boxes (the supervised peer) is scored by :class:`BoxScorer`:
the same matching, AP and areas; its detections at a threshold are its candidates scoring at least
that (its FROC sweeps the same :data:`FROC_THRESHOLDS`).

Metric centres: a detection's from its pixel centre and the geometry, with its rows counted from
the survey's first ping (``Scene.row_offset`` for frames); a ground-truth object's from its
metric position when the message carries one (the object itself, not the centre of its box,
which also covers the shadow), else from its box centre.

**Windows.** A window's true label is the class of a ground-truth object whose box centre lies in
the window (the nearest if several), background when it overlaps no ground-truth box, and it is
left out when it overlaps a box without holding its centre.

**Tokens** (a dense head's map, :func:`token_truth`; also its training targets): a token is an
object's class when its centre lies in the object's box or it holds the box centre (an object
smaller than a token still has one), background when it overlaps no box, and left out when it
overlaps a box otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mine_jepa_ros.detect.localise import EchoLocaliser
from mine_jepa_ros.detect.merging import Thresholds, detections_from_windows
from mine_jepa_ros.detect.rescore import CentredAnswers, CentredRescorer
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geometry import SonarGeometry, ground_range_m
from mine_jepa_ros.io.detections import Detection

FROC_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.05, 0.991, 0.025), 3))
"""Thresholds swept for the FROC curve (per-class decisions: a class can be detected at any
probability, so the sweep starts low)."""


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def f_beta(precision: float, recall: float, beta: float) -> float:
    """The F-score that weighs recall (Pd) ``beta`` times as much as precision (``beta`` 1: F1)."""
    b2 = beta * beta
    return 0.0 if precision + recall == 0 else (1 + b2) * precision * recall / (b2 * precision + recall)


WILSON_Z = 1.959964
"""The normal quantile of a two-sided 95 % interval."""


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / trials`` (95 % by default): unlike the
    normal approximation it stays within [0, 1] and is honest at 0, 1 and small counts; (0, 1)
    without trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_text(bounds: Sequence[float]) -> str:
    """An interval as the reports print it: ``[0.60, 0.74]``."""
    return f"[{bounds[0]:.2f}, {bounds[1]:.2f}]"


@dataclass(frozen=True)
class MatchGate:
    """How close a detection's centre must be to an object's: metres with geometry, else pixels."""

    metres: float = 2.0
    pixels: float = 48.0


@dataclass
class Scene:
    """One scored image: a waterfall frame, or a whole ping stream, with its windows and truth."""

    positions: np.ndarray  # (N, 2) window top-left rows, cols
    probabilities: np.ndarray  # (N, classes)
    truth: list[Detection]
    width: int
    rows: int  # pings in the scene
    row_offset: int = 0  # pings before it in the survey (frames), for absolute along-track positions
    geometry: SonarGeometry | None = None  # this survey's: metres and seabed area where known
    pixels: np.ndarray | None = None  # its pixels as classified, for localising detections re-made from its windows
    localiser: EchoLocaliser | None = None  # how the pipeline localised them (None: at the windows' centre)
    rescorer: CentredRescorer | None = None  # how the pipeline scored them again (None: the windows' score)
    _echo_centres: dict[tuple[int, int], tuple[float, float] | None] = field(default_factory=dict, init=False,
                                                                            repr=False, compare=False)
    _centred: CentredAnswers = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.localiser is None and self.rescorer is None:
            self.pixels = None  # kept only to localise and rescore: a scene of a pipeline that does neither holds none

    def located(self, detections: list[Detection], thresholds: Thresholds) -> list[Detection]:
        """Detections made from this scene's windows at ``thresholds``, localised, scored again and
        kept one per echo as the pipeline did its own (each start pixel localised once, each centre
        classified once: the threshold sweep makes the same detections again)."""
        if self.pixels is None:
            return detections
        if self.localiser is not None:
            detections = self.localiser.relocate(detections, self.pixels, found=self._echo_centres)
        if self.rescorer is not None:
            detections = self.rescorer.rescore(detections, self.pixels, thresholds, answers=self._centred)
        if self.localiser is not None:
            detections = self.localiser.distinct(detections)
        return detections


def swath_area_km2(rows: int, width: int, geometry: SonarGeometry) -> float:
    """Seabed covered by ``rows`` pings of ``width`` samples: track length x both sides' ground range."""
    ground = ground_range_m((width / 2) * geometry.slant_resolution_m, geometry.altitude_m)
    return rows * geometry.ping_spacing_m * 2 * ground / 1e6


@dataclass(frozen=True)
class FrocPoint:
    """The detector at one swept threshold, for one class."""

    threshold: float
    pd: float
    precision: float
    f1: float
    false_alarms: int
    false_alarms_per_km2: float | None


@dataclass(frozen=True)
class ClassDetections:
    """One class's detections scored at the thresholds in force."""

    pd: float
    precision: float
    f1: float
    false_alarms: int
    false_alarms_per_km2: float | None
    localisation_error: float | None  # mean distance of matched detections, in the metrics' unit
    detections: int
    objects: int
    matched: int
    ap: float
    threshold: float | None = None
    false_alarm_causes: dict[str, int] = field(default_factory=dict)  # FALSE_ALARM_CAUSES -> count
    miss_causes: dict[str, int] = field(default_factory=dict)  # MISS_CAUSES -> count

    @property
    def pd_interval(self) -> tuple[float, float]:
        """Wilson 95 % interval of Pd (matched of ``objects``)."""
        return wilson_interval(self.matched, self.objects)

    @property
    def precision_interval(self) -> tuple[float, float]:
        """Wilson 95 % interval of precision (matched of ``detections``)."""
        return wilson_interval(self.matched, self.detections)

    def to_dict(self, unit: str) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("localisation_error", "threshold")}
        out[f"localisation_error_{unit}"] = self.localisation_error
        out["pd_interval"] = list(self.pd_interval)
        out["precision_interval"] = list(self.precision_interval)
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], unit: str) -> ClassDetections:
        derived = (f"localisation_error_{unit}", "pd_interval", "precision_interval")  # recomputed from the counts
        values = {k: v for k, v in data.items() if k not in derived}
        return cls(localisation_error=data.get(f"localisation_error_{unit}"), **values)


@dataclass(frozen=True)
class DetectionMetrics:
    """A detector scored on surveys or images; :meth:`to_dict` is the JSON form (``metrics`` in
    ``replay --json`` and ``metrics.json``), :meth:`from_dict` reads it back."""

    detections: dict[str, ClassDetections]  # per object class
    gate: float  # the match distance, in ``unit``
    unit: str  # m with the sonar geometry, else px
    area_km2: float | None  # seabed covered (None without geometry)
    froc: dict[str, list[FrocPoint]]
    classes: list[str]  # the window confusion's rows and columns
    window_confusion: list[list[int]]  # rows true, columns predicted
    window_accuracy: float
    window_macro_f1: float
    window_f1: dict[str, float]
    windows_scored: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "detections": {name: d.to_dict(self.unit) for name, d in self.detections.items()},
            "match": {"gate": self.gate, "unit": self.unit},
            "area_km2": self.area_km2,
            "froc": {name: [asdict(p) for p in points] for name, points in self.froc.items()},
            "window_confusion": {"classes": self.classes, "matrix": self.window_confusion},
            "window_accuracy": self.window_accuracy, "window_macro_f1": self.window_macro_f1,
            "window_f1": self.window_f1, "windows_scored": self.windows_scored,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectionMetrics:
        unit = data["match"]["unit"]
        return cls(
            detections={n: ClassDetections.from_dict(d, unit) for n, d in data["detections"].items()},
            gate=data["match"]["gate"], unit=unit, area_km2=data["area_km2"],
            froc={n: [FrocPoint(**p) for p in points] for n, points in data["froc"].items()},
            classes=data["window_confusion"]["classes"], window_confusion=data["window_confusion"]["matrix"],
            window_accuracy=data["window_accuracy"], window_macro_f1=data["window_macro_f1"],
            window_f1=data["window_f1"], windows_scored=data["windows_scored"],
        )


@dataclass
class ClassScore:
    objects: int = 0
    detections: int = 0
    matched: int = 0
    errors: list[float] = field(default_factory=list)

    @property
    def pd(self) -> float:
        return self.matched / self.objects if self.objects else 0.0

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else 0.0

    @property
    def false_alarms(self) -> int:
        return self.detections - self.matched


def metric_centre(det: Detection, scene: Scene, truth: bool) -> tuple[float, float]:
    """Where ``det`` lies: metres (along-track from the survey start, signed cross-track) with the
    scene's geometry, else pixels; a ground-truth object's own metric position where it has one."""
    row, col = det.centre
    if scene.geometry is None:
        return row, col
    if truth and det.position_m is not None:
        return det.position_m
    return scene.geometry.position_m(row + scene.row_offset, col, scene.width)


def match_detections(detections: Sequence[Detection], scene: Scene, gate: MatchGate) -> list[tuple[int, int, float]]:
    """``(detection index, truth index, distance)`` of every match: greedy by descending score, each
    detection taking the nearest free object of its class within the gate."""
    limit = gate.metres if scene.geometry is not None else gate.pixels
    truth_xy = [metric_centre(t, scene, truth=True) for t in scene.truth]
    taken = [False] * len(scene.truth)
    pairs = []
    for i in sorted(range(len(detections)), key=lambda k: -detections[k].score):
        det = detections[i]
        x, y = metric_centre(det, scene, truth=False)
        best, best_d = -1, math.inf
        for j, gt in enumerate(scene.truth):
            if taken[j] or gt.class_name != det.class_name:
                continue
            d = math.hypot(x - truth_xy[j][0], y - truth_xy[j][1])
            if d <= limit and d < best_d:
                best, best_d = j, d
        if best >= 0:
            taken[best] = True
            pairs.append((i, best, best_d))
    return pairs


FALSE_ALARM_CAUSES = ("other_class", "duplicate", "near_object", "seabed")
MISS_CAUSES = ("other_class", "displaced", "not_detected")


def error_causes(detections: Sequence[Detection], scene: Scene, gate: MatchGate,
                 class_names: Sequence[str]) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Per object class, its false alarms and its missed objects in one scene counted by cause
    (module docstring, *Errors, by cause*): ``(false alarm causes, miss causes)``."""
    limit = gate.metres if scene.geometry is not None else gate.pixels
    truth_xy = [metric_centre(t, scene, truth=True) for t in scene.truth]
    det_xy = [metric_centre(d, scene, truth=False) for d in detections]
    pairs = match_detections(detections, scene, gate)
    matched_dets = {i for i, _j, _d in pairs}
    matched_truth = {j for _i, j, _d in pairs}
    names = list(class_names[1:])
    false_alarms = {name: dict.fromkeys(FALSE_ALARM_CAUSES, 0) for name in names}
    misses = {name: dict.fromkeys(MISS_CAUSES, 0) for name in names}

    def distance(a: tuple[float, float], b: tuple[float, float]) -> float:
        return math.hypot(a[0] - b[0], a[1] - b[1])

    for i, det in enumerate(detections):
        if i in matched_dets or det.class_name not in false_alarms:
            continue
        near = [(distance(det_xy[i], truth_xy[j]), gt.class_name, j) for j, gt in enumerate(scene.truth)]
        if any(d <= limit and name != det.class_name for d, name, _j in near):
            cause = "other_class"
        elif any(d <= limit and name == det.class_name and j in matched_truth for d, name, j in near):
            cause = "duplicate"
        elif any(d <= 2 * limit for d, _name, _j in near):
            cause = "near_object"
        else:
            cause = "seabed"
        false_alarms[det.class_name][cause] += 1
    for j, gt in enumerate(scene.truth):
        if j in matched_truth or gt.class_name not in misses:
            continue
        near_dets = [(distance(truth_xy[j], det_xy[i]), det.class_name) for i, det in enumerate(detections)]
        if any(d <= limit and name != gt.class_name for d, name in near_dets):
            cause = "other_class"
        elif any(d <= 2 * limit and name == gt.class_name for d, name in near_dets):
            cause = "displaced"
        else:
            cause = "not_detected"
        misses[gt.class_name][cause] += 1
    return false_alarms, misses


def froc_auc(points: Sequence[FrocPoint], max_fa_per_km2: float) -> float:
    """Area under Pd(false alarms per km²) from 0 to ``max_fa_per_km2``, divided by that range
    (1 = every object found with no false alarm); Pd at a false-alarm rate is the best Pd among
    the operating points at or below it."""
    if max_fa_per_km2 <= 0:
        raise ValueError("max_fa_per_km2 must be > 0")
    pts = sorted((p.false_alarms_per_km2, p.pd) for p in points if p.false_alarms_per_km2 is not None)
    area, best, last = 0.0, 0.0, 0.0
    for fa, pd in pts:
        if fa >= max_fa_per_km2:
            break
        area += best * (fa - last)
        best, last = max(best, pd), fa
    return (area + best * (max_fa_per_km2 - last)) / max_fa_per_km2


def average_precision(ranked: Sequence[tuple[float, bool]], objects: int) -> float:
    """Area under the precision/recall curve of score-ranked detections (``(score, matched)``), all
    points, precision made monotone (each recall's precision the best at that recall or beyond), as
    detection papers report AP; 0 without objects."""
    if objects <= 0 or not ranked:
        return 0.0
    matched = np.array([m for _s, m in sorted(ranked, key=lambda r: -r[0])], bool)
    tp = np.cumsum(matched)
    recall = tp / objects
    precision = tp / np.arange(1, len(matched) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * precision))


def window_truth(positions: np.ndarray, window: int, truth: Sequence[Detection], class_names: Sequence[str]) -> np.ndarray:
    """True label per window (index into ``class_names``), -1 for windows left out."""
    labels = np.zeros(len(positions), np.int64)
    if len(positions) == 0 or not truth:
        return labels
    r = positions[:, 0:1].astype(np.float64)
    c = positions[:, 1:2].astype(np.float64)
    boxes = np.array([g.box for g in truth], np.float64)  # (G, 4)
    centres = np.array([g.centre for g in truth], np.float64)
    overlaps = (r < boxes[:, 2]) & (r + window > boxes[:, 0]) & (c < boxes[:, 3]) & (c + window > boxes[:, 1])
    holds = (centres[:, 0] >= r) & (centres[:, 0] < r + window) & (centres[:, 1] >= c) & (centres[:, 1] < c + window)
    dist = (centres[:, 0] - (r + window / 2)) ** 2 + (centres[:, 1] - (c + window / 2)) ** 2
    dist = np.where(holds, dist, np.inf)
    nearest = dist.argmin(axis=1)
    has_centre = holds.any(axis=1)
    ids = np.array([class_names.index(g.class_name) if g.class_name in class_names else -1 for g in truth])
    labels = np.where(has_centre, ids[nearest], np.where(overlaps.any(axis=1), -1, 0))
    return labels.astype(np.int64)


def token_truth(positions: np.ndarray, window: int, tokens: int, truth: Sequence[Detection],
                class_names: Sequence[str]) -> np.ndarray:
    """True label per token of each window (module docstring): (N, tokens, tokens) indices into
    ``class_names``, -1 for tokens left out."""
    labels = np.zeros((len(positions), tokens, tokens), np.int64)
    if len(positions) == 0 or not truth:
        return labels
    size = window / tokens
    starts = np.arange(tokens) * size
    top = positions[:, 0:1].astype(np.float64) + starts  # (N, T) token rows' first pixel
    left = positions[:, 1:2].astype(np.float64) + starts
    positive = np.zeros(labels.shape, bool)
    for obj in truth:
        if obj.class_name not in class_names:
            continue
        r0, c0, r1, c1 = obj.box
        cr, cc = obj.centre
        in_r, in_c = (top + size / 2 >= r0) & (top + size / 2 < r1), (left + size / 2 >= c0) & (left + size / 2 < c1)
        over_r, over_c = (top < r1) & (top + size > r0), (left < c1) & (left + size > c0)
        hold_r, hold_c = (top <= cr) & (cr < top + size), (left <= cc) & (cc < left + size)
        mine = (in_r[:, :, None] & in_c[:, None, :]) | (hold_r[:, :, None] & hold_c[:, None, :])
        near = over_r[:, :, None] & over_c[:, None, :]
        labels[near & ~positive] = -1
        labels[mine & ~positive] = class_names.index(obj.class_name)
        positive |= mine
    return labels


class Scorer:
    """Accumulates scenes (their windows, the detections made from them and the truth) over a replay."""

    def __init__(self, class_names: Sequence[str], window: int, gate: MatchGate = MatchGate(),
                 froc_thresholds: Sequence[float] = FROC_THRESHOLDS) -> None:
        self.class_names = list(class_names)
        self.window = window
        self.gate = gate
        self.froc_thresholds = list(froc_thresholds)
        self.scenes: list[tuple[Scene, list[Detection]]] = []
        self.confusion = np.zeros((len(self.class_names),) * 2, np.int64)

    def _check_geometry(self, scene: Scene) -> None:
        """Scenes are scored in metres or in pixels, not both: all with a geometry, or all without."""
        if self.scenes and (self.scenes[0][0].geometry is None) != (scene.geometry is None):
            raise UserError("scenes with and without sonar geometry cannot be scored together (metres vs pixels)")

    def add(self, scene: Scene, detections: Sequence[Detection], labels: np.ndarray) -> None:
        """One scene with the detections the pipeline made for it and its windows' predicted labels."""
        self._check_geometry(scene)
        self.scenes.append((scene, list(detections)))
        true = window_truth(scene.positions, self.window, scene.truth, self.class_names)
        keep = true >= 0
        np.add.at(self.confusion, (true[keep], labels[keep]), 1)

    @property
    def metric(self) -> bool:
        return bool(self.scenes) and self.scenes[0][0].geometry is not None

    @property
    def unit(self) -> str:
        return "m" if self.metric else "px"

    @property
    def gate_value(self) -> float:
        return self.gate.metres if self.metric else self.gate.pixels

    @property
    def area_km2(self) -> float | None:
        if not self.metric:
            return None
        return sum(swath_area_km2(s.rows, s.width, s.geometry) for s, _ in self.scenes if s.geometry is not None)

    def _score(self, made: list[tuple[Scene, list[Detection]]]) -> dict[str, ClassScore]:
        scores = {name: ClassScore() for name in self.class_names[1:]}
        for scene, dets in made:
            for gt in scene.truth:
                if gt.class_name in scores:
                    scores[gt.class_name].objects += 1
            for det in dets:
                if det.class_name in scores:
                    scores[det.class_name].detections += 1
            for i, _j, dist in match_detections(dets, scene, self.gate):
                score = scores[dets[i].class_name]
                score.matched += 1
                score.errors.append(dist)
        return scores

    def _per_km2(self, count: int) -> float | None:
        area = self.area_km2
        return count / area if area else None

    def detections_at(self, index: int, thresholds: Thresholds) -> list[Detection]:
        """Scene ``index``'s detections at ``thresholds``, re-made from its windows' probabilities
        exactly as the pipeline makes them."""
        scene = self.scenes[index][0]
        return scene.located(detections_from_windows(scene.positions, scene.probabilities, thresholds, self.window,
                                                     self.class_names), thresholds)

    def froc(self) -> dict[str, list[FrocPoint]]:
        """Per class, one point per swept threshold: threshold, Pd, precision, F1, false alarms (per km²)."""
        curves: dict[str, list[FrocPoint]] = {name: [] for name in self.class_names[1:]}
        for t in self.froc_thresholds:
            thresholds = Thresholds.of(self.class_names, t)
            made = [(scene, self.detections_at(k, thresholds)) for k, (scene, _) in enumerate(self.scenes)]
            for name, s in self._score(made).items():
                curves[name].append(FrocPoint(t, s.pd, s.precision, f1(s.precision, s.pd), s.false_alarms,
                                              self._per_km2(s.false_alarms)))
        return curves

    def average_precision(self) -> dict[str, float]:
        """Per class, AP (:func:`average_precision`) of every detection the windows make at the lowest
        threshold (0: every local maximum of the class's probability), matched as at the operating point."""
        floor = Thresholds.of(self.class_names, 0.0)
        ranked: dict[str, list[tuple[float, bool]]] = {name: [] for name in self.class_names[1:]}
        objects = {name: 0 for name in self.class_names[1:]}
        for k, (scene, _) in enumerate(self.scenes):
            made = self.detections_at(k, floor)
            matched = {i for i, _j, _d in match_detections(made, scene, self.gate)}
            for i, det in enumerate(made):
                if det.class_name in ranked:
                    ranked[det.class_name].append((det.score, i in matched))
            for gt in scene.truth:
                if gt.class_name in objects:
                    objects[gt.class_name] += 1
        return {name: average_precision(ranked[name], objects[name]) for name in ranked}

    def error_causes(self) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
        """Per class, the false alarms and misses of the detections in force, by cause, over every scene."""
        names = self.class_names[1:]
        false_alarms = {name: dict.fromkeys(FALSE_ALARM_CAUSES, 0) for name in names}
        misses = {name: dict.fromkeys(MISS_CAUSES, 0) for name in names}
        for scene, dets in self.scenes:
            scene_fa, scene_misses = error_causes(dets, scene, self.gate, self.class_names)
            for name in names:
                for cause, n in scene_fa[name].items():
                    false_alarms[name][cause] += n
                for cause, n in scene_misses[name].items():
                    misses[name][cause] += n
        return false_alarms, misses

    def metrics(self, thresholds: Thresholds | None = None) -> DetectionMetrics:
        """Detection metrics at the thresholds in force (``thresholds``, only reported), the FROC
        curves and the window metrics."""
        ap = self.average_precision()
        false_alarm_causes, miss_causes = self.error_causes()
        per_class = {
            name: ClassDetections(s.pd, s.precision, f1(s.precision, s.pd), s.false_alarms, self._per_km2(s.false_alarms),
                                  float(np.mean(s.errors)) if s.errors else None, s.detections, s.objects, s.matched,
                                  ap[name], None if thresholds is None else thresholds[name],
                                  false_alarm_causes[name], miss_causes[name])
            for name, s in self._score(self.scenes).items()
        }
        cm = self.confusion
        window_f1 = {}
        for k, name in enumerate(self.class_names):
            p = cm[k, k] / cm[:, k].sum() if cm[:, k].sum() else 0.0
            r = cm[k, k] / cm[k, :].sum() if cm[k, :].sum() else 0.0
            window_f1[name] = f1(p, r)
        total = int(cm.sum())
        return DetectionMetrics(
            detections=per_class, gate=self.gate_value, unit=self.unit, area_km2=self.area_km2, froc=self.froc(),
            classes=list(self.class_names), window_confusion=cm.tolist(),
            window_accuracy=float(np.trace(cm) / total) if total else 0.0,
            window_macro_f1=float(np.mean(list(window_f1.values()))) if total else 0.0,
            window_f1=window_f1, windows_scored=total,
        )


class BoxScorer(Scorer):
    """Scores a detector that makes scored boxes itself (the supervised peer): its detections at a
    threshold are the candidates scoring at least that, with the same matching, AP, FROC and areas
    as :class:`Scorer`. It has no windows, so its window metrics are empty."""

    def __init__(self, class_names: Sequence[str], gate: MatchGate = MatchGate(),
                 froc_thresholds: Sequence[float] = FROC_THRESHOLDS) -> None:
        super().__init__(class_names, 0, gate, froc_thresholds)
        self.candidates: list[list[Detection]] = []

    def add_boxes(self, scene: Scene, candidates: Sequence[Detection], thresholds: Thresholds) -> None:
        """One scene with every candidate the detector made (its lowest score threshold)."""
        self._check_geometry(scene)
        self.candidates.append(list(candidates))
        self.scenes.append((scene, self.detections_at(len(self.candidates) - 1, thresholds)))

    def detections_at(self, index: int, thresholds: Thresholds) -> list[Detection]:
        return [d for d in self.candidates[index] if d.class_name in thresholds.class_names[1:]
                and d.score >= thresholds[d.class_name]]


# -- labelled windows (patch stores) ---------------------------------------------------------------


@dataclass
class ClassificationMetrics:
    """Scores of a classifier on labelled patches; ``to_dict`` is its JSON form (``from_dict`` reads it back)."""

    macro_f1: float
    per_class_f1: dict[str, float]
    accuracy: float
    confusion: dict[str, Any]  # {"classes": [...], "matrix": rows true, columns predicted}
    samples: int
    milco_vs_rest_f1: float | None = None  # where a class is called MILCO
    milco_recall: float | None = None
    split: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassificationMetrics:
        return cls(**data)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> ClassificationMetrics:
    k = len(class_names)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)

    def f1_of(tp: float, fp: float, fn: float) -> float:
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)

    per_class = {name: f1_of(cm[i, i], cm[:, i].sum() - cm[i, i], cm[i, :].sum() - cm[i, i]) for i, name in enumerate(class_names)}
    out = ClassificationMetrics(
        macro_f1=float(np.mean(list(per_class.values()))), per_class_f1=per_class,
        accuracy=float(np.trace(cm) / max(1, cm.sum())), confusion={"classes": class_names, "matrix": cm.tolist()},
        samples=int(cm.sum()),
    )
    if "MILCO" in class_names:
        m = class_names.index("MILCO")
        t, p = y_true == m, y_pred == m
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        out.milco_vs_rest_f1 = f1_of(tp, fp, fn)
        out.milco_recall = tp / max(1, tp + fn)
    return out
