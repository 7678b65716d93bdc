"""From classified windows to detections: thresholds, window labels, merging and localisation.

A window is positive for its arg-max class when that class is not background and its probability
reaches the class threshold. :class:`WindowMerger` groups the positive windows of one class that
overlap into connected components and turns each into detections
(:class:`~mine_jepa_ros.io.detections.Detection`) that fit the object rather than the windows:

* **peaks**: a window whose probability is the highest among the windows it overlaps is a peak;
  a component with several peaks (necessarily windows that do not overlap) holds several objects,
  and each window goes to its nearest peak;
* **centre**: the mean of the group's window centres weighted by how far each window's probability
  is above the class threshold (``p - threshold + 0.01``): windows that barely pass, which hold
  only an edge of the object, pull little;
* **box**: centred on that estimate and just covering the intersection of the group's windows that
  contain it (every window that saw the object agrees it lies there), at least 8 pixels across;
* **score**: the group's highest probability.

Components, and so detections, do not depend on the order windows arrive in: the streaming path
(windows arriving ping by ping) and the frame path give identical detections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.detections import Detection


@dataclass(frozen=True)
class Thresholds:
    """A detector's per-class probability thresholds, the one form they travel in: one value per
    object class of ``class_names`` (background first, which has none). :meth:`of` takes what a
    user gives (one number for every class, a list for the object classes in order, or a mapping
    class -> threshold) and checks it."""

    class_names: tuple[str, ...]
    values: tuple[float, ...]  # per object class, in order

    @classmethod
    def of(cls, class_names: Sequence[str], given: Thresholds | Mapping[str, float] | float | Sequence[float]) -> Thresholds:
        """The thresholds for ``class_names``; a mapping's missing classes get 0.5. Raises UserError."""
        names = tuple(class_names)
        objects = names[1:]
        if isinstance(given, Thresholds):
            if given.class_names != names:
                raise UserError(f"thresholds for classes {list(given.class_names)}; the model's are {list(names)}")
            return given
        if isinstance(given, (int, float)):
            values = [float(given)] * len(objects)
        elif isinstance(given, Mapping):
            unknown = sorted(set(given) - set(objects))
            if unknown:
                raise UserError(f"thresholds for unknown classes {unknown}; classes are {list(objects)}")
            values = [float(given.get(n, 0.5)) for n in objects]
        else:
            values = [float(v) for v in given]
            if len(values) == 1:
                values = values * len(objects)
            if len(values) != len(objects):
                raise UserError(f"{len(values)} thresholds for {len(objects)} classes {list(objects)}")
        bad = [v for v in values if not 0.0 <= v <= 1.0]
        if bad:
            raise UserError(f"thresholds must be within [0, 1], got {bad}")
        return cls(names, tuple(values))

    def indexed(self) -> list[float]:
        """Index-aligned with ``class_names`` (background's 1.0 is never used)."""
        return [1.0, *self.values]

    def __getitem__(self, name: str) -> float:
        return self.values[self.class_names.index(name) - 1]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.class_names[1:], self.values))

    @property
    def lowest(self) -> float:
        return min(self.values)


def window_labels(probs: np.ndarray, thresholds: Thresholds | None) -> np.ndarray:
    """Per-window class index: the arg-max class if it is not background and reaches its threshold
    (None: the arg-max alone), else 0."""
    labels = probs.argmax(axis=1)
    thr = np.asarray([0.0] * probs.shape[1] if thresholds is None else thresholds.indexed(), dtype=np.float32)
    best = probs[np.arange(len(probs)), labels]
    positive = (labels > 0) & (best >= thr[labels])
    return np.where(positive, labels, 0)


MAX_COMPONENT_WINDOWS = 4096
"""Windows kept per component for localisation (a bound on memory for endless positive streams)."""


@dataclass
class _Component:
    label: int
    box: list[int]  # r0, c0, r1, c1: union of its windows (decides when no future window can touch it)
    members: list[tuple[int, int]] = field(default_factory=list)  # windows a future window may still touch
    windows: list[tuple[int, int, float, float]] = field(default_factory=list)  # row, col, probability, weight


class WindowMerger:
    """Connected components of overlapping positive windows of the same class, localised on finalize.

    Feed windows with :meth:`add` in any order; :meth:`finalize` returns the detections of the
    components that no window starting at row >= ``min_future_row`` can touch any more;
    :meth:`flush` returns the rest. Memory stays bounded on endless streams: members that no
    future window can overlap are pruned from the overlap test.
    """

    def __init__(self, window: int, class_names: Sequence[str]) -> None:
        self.window = window
        self.class_names = list(class_names)
        self._open: list[_Component] = []

    def _overlaps(self, comp: _Component, row: int, col: int) -> bool:
        w = self.window
        return any(abs(row - r) < w and abs(col - c) < w for r, c in comp.members)

    def add(self, positions: np.ndarray, probabilities: np.ndarray, thresholds: Thresholds) -> np.ndarray:
        """Add classified windows (top-left positions, class probabilities); returns their labels."""
        labels = window_labels(probabilities, thresholds) if len(positions) else np.zeros(0, np.int64)
        thr = np.asarray(thresholds.indexed(), np.float64)
        for (row, col), label, probs in zip(positions.tolist(), labels.tolist(), probabilities):
            if label == 0:
                continue
            p = float(probs[label])
            window = (row, col, p, max(p - float(thr[label]), 0.0) + 0.01)
            touching = [c for c in self._open if c.label == label and self._overlaps(c, row, col)]
            merged = _Component(label, [row, col, row + self.window, col + self.window], [(row, col)], [window])
            for comp in touching:
                merged.box = [min(merged.box[0], comp.box[0]), min(merged.box[1], comp.box[1]),
                              max(merged.box[2], comp.box[2]), max(merged.box[3], comp.box[3])]
                merged.members.extend(comp.members)
                merged.windows.extend(comp.windows)
                self._open.remove(comp)
            if len(merged.windows) > MAX_COMPONENT_WINDOWS:  # keep the most confident ones
                merged.windows = sorted(merged.windows, key=lambda w: (-w[2], w[0], w[1]))[:MAX_COMPONENT_WINDOWS]
            self._open.append(merged)
        return labels

    def _to_detections(self, comp: _Component) -> list[Detection]:
        name = self.class_names[comp.label]
        wins = np.array(sorted(comp.windows), np.float64)  # sorted: the result does not depend on arrival order
        rows, cols, probs, weights = wins.T
        w = self.window
        overlap = (np.abs(rows[:, None] - rows[None, :]) < w) & (np.abs(cols[:, None] - cols[None, :]) < w)
        order = np.lexsort((cols, rows, -probs))  # rank 0 = most probable (ties: top-left first)
        rank = np.empty(len(wins), np.int64)
        rank[order] = np.arange(len(wins))
        peaks = np.flatnonzero([(rank[i] <= rank[overlap[i]]).all() for i in range(len(wins))])
        centres = np.stack([rows + w / 2, cols + w / 2], axis=1)
        nearest = ((centres[:, None, :] - centres[None, peaks, :]) ** 2).sum(axis=2).argmin(axis=1)
        out = []
        for k in range(len(peaks)):
            group = nearest == k
            cr, cc = (weights[group, None] * centres[group]).sum(axis=0) / weights[group].sum()
            inside = group & (rows <= cr) & (cr < rows + w) & (cols <= cc) & (cc < cols + w)
            if inside.any():
                r0, r1 = rows[inside].max(), (rows[inside] + w).min()
                c0, c1 = cols[inside].max(), (cols[inside] + w).min()
                half_r, half_c = max(cr - r0, r1 - cr, 4.0), max(cc - c0, c1 - cc, 4.0)
            else:  # a bent group whose weighted centre no window covers: a window-sized box
                half_r = half_c = w / 2
            box = (float(cr - half_r), float(cc - half_c), float(cr + half_r), float(cc + half_c))
            out.append(Detection(class_name=name, score=float(probs[group].max()), box=box,
                                 id=f"{name}-{int(round(cr))}-{int(round(cc))}"))
        return out

    def finalize(self, min_future_row: int) -> list[Detection]:
        done = [c for c in self._open if c.box[2] <= min_future_row]
        self._open = [c for c in self._open if c.box[2] > min_future_row]
        for comp in self._open:  # members a future window cannot reach no longer matter
            comp.members = [(r, c) for r, c in comp.members if r > min_future_row - self.window]
        found = [d for c in done for d in self._to_detections(c)]
        return sorted(found, key=lambda d: (d.box[0], d.box[1], d.class_name))

    def flush(self) -> list[Detection]:
        return self.finalize(np.iinfo(np.int64).max)


def detections_from_windows(positions: np.ndarray, probabilities: np.ndarray, thresholds: Thresholds,
                            window: int, class_names: Sequence[str]) -> list[Detection]:
    """The detections a set of classified windows makes at ``thresholds`` (what the pipeline
    publishes for them; used to sweep thresholds offline)."""
    merger = WindowMerger(window, class_names)
    merger.add(positions, probabilities, thresholds)
    return merger.flush()
