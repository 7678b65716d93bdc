"""Scoring detections and windows against ground truth.

Detections: a detection matches a ground-truth object of the same class when the object's box
centre lies inside the detection's box; matching is greedy by descending score and each object
is matched at most once. Precision = matched detections / detections, recall = matched objects /
objects, per class.

Windows: a window's true label is the class of a ground-truth object whose box centre lies inside
the window (the nearest centre if several), background when the window overlaps no ground-truth
box, and it is left out when it overlaps a box without holding its centre (partly seen objects
are neither clean positives nor clean background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mine_jepa_ros.io.detections import Detection


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def match_detections(detections: Sequence[Detection], truth: Sequence[Detection]) -> tuple[list[bool], list[bool]]:
    """(detection matched?, truth matched?) flags, greedy by score, same class, centre inside box."""
    det_ok = [False] * len(detections)
    gt_ok = [False] * len(truth)
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    for i in order:
        det = detections[i]
        for j, gt in enumerate(truth):
            if not gt_ok[j] and gt.class_name == det.class_name and det.contains(*gt.centre):
                det_ok[i] = gt_ok[j] = True
                break
    return det_ok, gt_ok


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


@dataclass
class Scorer:
    """Accumulates detection matches and the window confusion matrix over a replay."""

    class_names: list[str]
    window: int
    tp: dict[str, int] = field(default_factory=dict)
    n_det: dict[str, int] = field(default_factory=dict)
    n_gt: dict[str, int] = field(default_factory=dict)
    matched_gt: dict[str, int] = field(default_factory=dict)
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def __post_init__(self) -> None:
        k = len(self.class_names)
        self.confusion = np.zeros((k, k), np.int64)
        for name in self.class_names[1:]:
            self.tp[name] = self.n_det[name] = self.n_gt[name] = self.matched_gt[name] = 0

    def add_detections(self, detections: Sequence[Detection], truth: Sequence[Detection]) -> None:
        det_ok, gt_ok = match_detections(detections, truth)
        for det, ok in zip(detections, det_ok):
            if det.class_name in self.n_det:
                self.n_det[det.class_name] += 1
                self.tp[det.class_name] += int(ok)
        for gt, ok in zip(truth, gt_ok):
            if gt.class_name in self.n_gt:
                self.n_gt[gt.class_name] += 1
                self.matched_gt[gt.class_name] += int(ok)

    def add_windows(self, positions: np.ndarray, predicted: np.ndarray, truth: Sequence[Detection]) -> None:
        true = window_truth(positions, self.window, truth, self.class_names)
        keep = true >= 0
        np.add.at(self.confusion, (true[keep], predicted[keep]), 1)

    def metrics(self) -> dict[str, object]:
        per_class = {}
        for name in self.class_names[1:]:
            p = self.tp[name] / self.n_det[name] if self.n_det[name] else 0.0
            r = self.matched_gt[name] / self.n_gt[name] if self.n_gt[name] else 0.0
            per_class[name] = {"precision": p, "recall": r, "f1": f1(p, r), "detections": self.n_det[name],
                               "objects": self.n_gt[name]}
        cm = self.confusion
        window_f1 = {}
        for k, name in enumerate(self.class_names):
            p = cm[k, k] / cm[:, k].sum() if cm[:, k].sum() else 0.0
            r = cm[k, k] / cm[k, :].sum() if cm[k, :].sum() else 0.0
            window_f1[name] = f1(p, r)
        total = int(cm.sum())
        return {
            "detections": per_class,
            "window_confusion": {"classes": self.class_names, "matrix": cm.tolist()},
            "window_accuracy": float(np.trace(cm) / total) if total else 0.0,
            "window_macro_f1": float(np.mean(list(window_f1.values()))) if total else 0.0,
            "window_f1": window_f1,
            "windows_scored": total,
        }
