"""From classified windows to detections: thresholds, window labels and the merging of positive windows.

:class:`WindowMerger` turns classified windows into :class:`~mine_jepa_ros.io.detections.Detection`
records: a window is positive for its arg-max class when that class is not background and its
probability reaches the class threshold; positive windows of one class that overlap form one
connected component, i.e. one detection whose box is the union of its windows and whose score is
their highest probability. Components are independent of the order windows arrive in, so the
streaming path (windows arriving ping by ping) and the frame path give identical detections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.detections import Detection


def window_labels(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per-window class index: the arg-max class if it is not background and reaches its threshold, else 0."""
    labels = probs.argmax(axis=1)
    thr = np.asarray(thresholds, dtype=np.float32)
    best = probs[np.arange(len(probs)), labels]
    positive = (labels > 0) & (best >= thr[labels])
    return np.where(positive, labels, 0)


@dataclass
class _Component:
    label: int
    box: list[int]  # r0, c0, r1, c1
    score: float
    members: list[tuple[int, int]] = field(default_factory=list)


class WindowMerger:
    """Connected components of overlapping positive windows of the same class.

    Feed windows with :meth:`add` in any order; :meth:`finalize` returns the components that no
    window starting at row >= ``min_future_row`` can touch any more; :meth:`flush` returns the rest.
    Memory stays bounded on endless streams: members that no future window can overlap are pruned.
    """

    def __init__(self, window: int, class_names: Sequence[str]) -> None:
        self.window = window
        self.class_names = list(class_names)
        self._open: list[_Component] = []

    def _overlaps(self, comp: _Component, row: int, col: int) -> bool:
        w = self.window
        return any(abs(row - r) < w and abs(col - c) < w for r, c in comp.members)

    def add(self, positions: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        for (row, col), label, score in zip(positions.tolist(), labels.tolist(), scores.tolist()):
            if label == 0:
                continue
            touching = [c for c in self._open if c.label == label and self._overlaps(c, row, col)]
            merged = _Component(label, [row, col, row + self.window, col + self.window], float(score), [(row, col)])
            for comp in touching:
                merged.box = [min(merged.box[0], comp.box[0]), min(merged.box[1], comp.box[1]),
                              max(merged.box[2], comp.box[2]), max(merged.box[3], comp.box[3])]
                merged.score = max(merged.score, comp.score)
                merged.members.extend(comp.members)
                self._open.remove(comp)
            self._open.append(merged)

    def _to_detection(self, comp: _Component) -> Detection:
        r0, c0, r1, c1 = comp.box
        name = self.class_names[comp.label]
        return Detection(class_name=name, score=comp.score, box=(float(r0), float(c0), float(r1), float(c1)), id=f"{name}-{r0}-{c0}")

    def finalize(self, min_future_row: int) -> list[Detection]:
        done = [c for c in self._open if c.box[2] <= min_future_row]
        self._open = [c for c in self._open if c.box[2] > min_future_row]
        for comp in self._open:  # members a future window cannot reach no longer matter
            comp.members = [(r, c) for r, c in comp.members if r > min_future_row - self.window]
        return sorted((self._to_detection(c) for c in done), key=lambda d: (d.box[0], d.box[1], d.class_name))

    def flush(self) -> list[Detection]:
        return self.finalize(np.iinfo(np.int64).max)


def thresholds_for(class_names: Sequence[str], thresholds: Mapping[str, float] | float | Sequence[float]) -> list[float]:
    """Per-class thresholds (index-aligned with ``class_names``; background's is unused).

    Accepts one float for every class, a sequence for the non-background classes in order, or a
    mapping class name -> threshold (missing classes get 0.5).
    """
    names = list(class_names)
    if isinstance(thresholds, (int, float)):
        values = [float(thresholds)] * (len(names) - 1)
    elif isinstance(thresholds, Mapping):
        unknown = sorted(set(thresholds) - set(names[1:]))
        if unknown:
            raise UserError(f"thresholds for unknown classes {unknown}; classes are {names[1:]}")
        values = [float(thresholds.get(n, 0.5)) for n in names[1:]]
    else:
        values = [float(v) for v in thresholds]
        if len(values) == 1:
            values = values * (len(names) - 1)
        if len(values) != len(names) - 1:
            raise UserError(f"{len(values)} thresholds for {len(names) - 1} classes {names[1:]}")
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise UserError(f"thresholds must be within [0, 1], got {bad}")
    return [1.0, *values]
