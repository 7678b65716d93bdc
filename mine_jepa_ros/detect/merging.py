"""From classified windows to detections: thresholds, window labels, merging and localisation.

**Decisions are per class**, as a detection head with one score per class makes them (FCOS,
RetinaNet, YOLO): a window is positive for every object class whose probability reaches that
class's threshold, whether or not it is the window's arg-max (:func:`class_positives`). An object
the model calls MILCO 0.4, NOMBO 0.5 is then still a MILCO candidate at a MILCO threshold of 0.4,
so the threshold sweep (FROC, AP) reaches every object the model gives any weight to, and the
classes' thresholds are independent knobs. (A window's *label*, :func:`window_labels`, stays its
arg-max class: the confusion matrix and the overlay's colours.)

:class:`WindowMerger` groups the positive windows of one class that
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
(windows arriving ping by ping) and the frame path give identical detections (dense maps: equal to
rounding, the stitched map's sums being made in arrival order).

**Dense maps.** A dense head gives each window a (classes, tokens, tokens) map, one class vector
per 16-pixel patch token. :class:`TokenMerger` stitches the overlapping windows' maps into one
map of the waterfall (each cell the mean of the tokens over it, so one window's noise is averaged
with its neighbours' view of the same seabed) and decodes it by peak finding, class by class: a
cell whose probability of the class reaches the class threshold and is the highest of that class
nearby is an object, centred on
the weighted centroid of the positive cells around it (sub-token precision), boxed by its
connected positive cells. :func:`make_merger` picks the merger for a model's output,
:func:`detections_from_windows` for the shape of the probabilities.
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


def class_positives(probs: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Per-class decisions on probabilities of shape (N, classes, ...) (windows, or dense maps):
    True where an object class's probability reaches that class's threshold; background is never
    positive. A window or cell may be positive for several classes."""
    thr = np.asarray(thresholds.indexed(), np.float64).reshape((1, -1) + (1,) * (probs.ndim - 2))
    positive = probs >= thr
    positive[:, 0] = False
    return positive


def window_labels(probs: np.ndarray, thresholds: Thresholds | None) -> np.ndarray:
    """Per-window class index: the arg-max class if it is not background and reaches its threshold
    (None: the arg-max alone), else 0. Dense maps (N, classes, tokens, tokens): the class of the
    window's most probable positive token, else 0."""
    thr = np.asarray([0.0] * probs.shape[1] if thresholds is None else thresholds.indexed(), dtype=np.float32)
    if probs.ndim == 4:
        labels, best = probs.argmax(axis=1), probs.max(axis=1)  # (N, tokens, tokens)
        positive = (labels > 0) & (best >= thr[labels])
        score = np.where(positive, best, -1.0).reshape(len(probs), -1)
        top = score.argmax(axis=1)
        rows = np.arange(len(probs))
        return np.where(score[rows, top] >= 0, labels.reshape(len(probs), -1)[rows, top], 0)
    labels = probs.argmax(axis=1)
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
        """Add classified windows (top-left positions, class probabilities): each joins a component of
        every class it is positive for (:func:`class_positives`); returns their labels."""
        if len(positions) == 0:
            return np.zeros(0, np.int64)
        thr = np.asarray(thresholds.indexed(), np.float64)
        window_rows, classes = np.nonzero(class_positives(probabilities, thresholds))
        for index, label in zip(window_rows.tolist(), classes.tolist()):
            row, col = (int(v) for v in positions[index])
            p = float(probabilities[index, label])
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
        return window_labels(probabilities, thresholds)

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


PEAK_RADIUS_CELLS = 2
"""Peaks of one class closer than this many cells (32 px at 16-pixel tokens) are one object: the
stronger is kept."""
BOX_REACH_CELLS = 4
"""A detection's box is the extent of its peak's positive cells within this many cells (64 px)."""
_REACH = max(PEAK_RADIUS_CELLS, BOX_REACH_CELLS)
_FLUSH = np.iinfo(np.int64).max


class TokenMerger:
    """Detections from dense (classes, tokens, tokens) window maps (module docstring).

    The windows' token maps are stitched into one map of the waterfall on a grid of token-sized
    cells anchored at pixel (0, 0): every token adds its probabilities to the cells it overlaps,
    weighted by the overlap (windows at a stride that is a multiple of the token size, as the
    default 64 is of 16, fall exactly on cells; border-aligned windows spread over neighbours), and
    a cell's probabilities are the weighted mean. Peaks are found on that map, class by class: a
    cell positive for the class (its probability reaches the class threshold,
    :func:`class_positives`) holding the highest probability of that class within
    :data:`PEAK_RADIUS_CELLS` cells. The centre is the probability-weighted centroid of the
    positive cells of its class around it (3 x 3), the box the extent of its connected positive
    cells within :data:`BOX_REACH_CELLS`, the score the peak's probability.

    The interface is :class:`WindowMerger`'s: :meth:`add`; :meth:`finalize` returns the peaks no
    window starting at row >= ``min_future_row`` can change any more; :meth:`flush` the rest.
    Memory: the map's rows that a future window or an undecided peak can still touch.
    """

    def __init__(self, window: int, class_names: Sequence[str]) -> None:
        self.window = window
        self.class_names = list(class_names)
        self.cell = 0.0  # pixels per cell (the token size), known from the first map
        self._top = 0  # the first cell row held in the accumulators
        self._sum = np.zeros((len(self.class_names), 0, 0))  # (classes, rows, cols) probability sums
        self._weight = np.zeros((0, 0))
        self._decided = 0  # cell rows whose peaks were returned
        self._thresholds: Thresholds | None = None

    def _grow(self, rows: int, cols: int) -> None:
        have_r, have_c = self._weight.shape
        rows, cols = max(rows, have_r), max(cols, have_c)
        if (rows, cols) == (have_r, have_c):
            return
        grown = np.zeros((len(self.class_names), rows, cols))
        grown[:, :have_r, :have_c] = self._sum
        weight = np.zeros((rows, cols))
        weight[:have_r, :have_c] = self._weight
        self._sum, self._weight = grown, weight

    def add(self, positions: np.ndarray, probabilities: np.ndarray, thresholds: Thresholds) -> np.ndarray:
        """Add classified windows (top-left positions, (N, classes, T, T) maps); returns their labels."""
        self._thresholds = thresholds
        if len(positions) == 0:
            return np.zeros(0, np.int64)
        n, classes, side = len(positions), probabilities.shape[1], probabilities.shape[-1]
        self.cell = self.window / side
        # every token's top-left corner in cells, and the (up to) four cells it overlaps, by how much
        offsets = np.arange(side, dtype=np.float64)
        rows = (positions[:, 0, None] / self.cell + offsets)[:, :, None].repeat(side, axis=2).ravel() - self._top
        cols = (positions[:, 1, None] / self.cell + offsets)[:, None, :].repeat(side, axis=1).ravel()
        probs = probabilities.reshape(n, classes, -1).transpose(0, 2, 1).reshape(-1, classes).astype(np.float64)
        r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
        fr, fc = rows - r0, cols - c0
        if (r0 < self._decided - self._top).any():
            raise ValueError("a window over map rows already decoded (finalize() had passed them)")
        self._grow(int(r0.max()) + 2, int(c0.max()) + 2)
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            keep = w > 1e-9
            at = (r0[keep] + dr, c0[keep] + dc)
            np.add.at(self._weight, at, w[keep])
            for k in range(classes):
                np.add.at(self._sum[k], at, w[keep] * probs[keep, k])
        return window_labels(probabilities, thresholds)

    def _peaks(self, first: int, last: int) -> list[Detection]:
        """The detections whose peak lies in held cell rows ``first`` .. ``last`` - 1."""
        assert self._thresholds is not None
        seen = self._weight > 0
        mean = np.where(seen, self._sum / np.maximum(self._weight, 1e-12), 0.0)
        mean[0] = np.where(seen, mean[0], 1.0)  # cells no token covered are background
        thr = np.asarray(self._thresholds.indexed())
        of_class = class_positives(mean[None], self._thresholds)[0] & seen  # (classes, rows, cols)
        height, width = mean.shape[1:]
        out = []
        for k, i, j in zip(*np.nonzero(of_class[:, first:last])):
            k, i = int(k), int(i) + first
            best, mine, p = mean[k], of_class[k], float(mean[k, i, j])
            a, b = max(i - PEAK_RADIUS_CELLS, 0), min(i + PEAK_RADIUS_CELLS + 1, height)
            c, d = max(j - PEAK_RADIUS_CELLS, 0), min(j + PEAK_RADIUS_CELLS + 1, width)
            hood = np.where(mine[a:b, c:d], best[a:b, c:d], -1.0)
            first_max = np.argwhere(hood == hood.max())[0]  # equal peaks: the first in raster order stands
            if hood.max() > p or (first_max[0] + a, first_max[1] + c) != (i, j):
                continue
            a, c = max(i - 1, 0), max(j - 1, 0)
            weights = np.where(mine[a : i + 2, c : j + 2], best[a : i + 2, c : j + 2] - thr[k] + 0.01, 0.0)
            ys, xs = np.nonzero(weights)
            w = weights[ys, xs]
            cr = float(((ys + a + 0.5) * w).sum() / w.sum() + self._top) * self.cell
            cc = float(((xs + c + 0.5) * w).sum() / w.sum()) * self.cell
            a, b = max(i - BOX_REACH_CELLS, 0), min(i + BOX_REACH_CELLS + 1, height)
            c, d = max(j - BOX_REACH_CELLS, 0), min(j + BOX_REACH_CELLS + 1, width)
            bi, bj = np.nonzero(_component(mine[a:b, c:d], i - a, j - c))
            half_r = max((bi.max() - bi.min() + 1) * self.cell / 2, 4.0)
            half_c = max((bj.max() - bj.min() + 1) * self.cell / 2, 4.0)
            name = self.class_names[k]
            out.append(Detection(class_name=name, score=p, box=(cr - half_r, cc - half_c, cr + half_r, cc + half_c),
                                 id=f"{name}-{int(round(cr))}-{int(round(cc))}"))
        return out

    def finalize(self, min_future_row: int) -> list[Detection]:
        if not self.cell:
            return []
        held = self._weight.shape[0]
        if min_future_row >= _FLUSH:
            decided = held  # the end: every cell is final
        else:  # a future window adds to cells from the one holding min_future_row on; a peak is decided
            # once every cell within its reach (suppression radius, box) is final
            decided = min(int(min_future_row // self.cell) - self._top - _REACH, held)
        start = self._decided - self._top
        if decided <= start:
            return []
        found = self._peaks(start, decided)
        self._decided = self._top + decided
        drop = max(0, decided - _REACH - 1)  # rows no undecided peak can reach
        if drop and min_future_row < _FLUSH:
            self._sum, self._weight = self._sum[:, drop:], self._weight[drop:]
            self._top += drop
        return sorted(found, key=lambda d: (d.box[0], d.box[1], d.class_name))

    def flush(self) -> list[Detection]:
        return self.finalize(_FLUSH)


def _component(mask: np.ndarray, i: int, j: int) -> np.ndarray:
    """The 4-connected component of ``mask`` holding (i, j)."""
    seen = np.zeros_like(mask)
    stack = [(i, j)]
    while stack:
        a, b = stack.pop()
        if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
            seen[a, b] = True
            stack += [(a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)]
    return seen


Merger = WindowMerger | TokenMerger


def make_merger(output: str, window: int, class_names: Sequence[str]) -> Merger:
    """The merger for a model's output (``window`` or ``dense``, :data:`~mine_jepa_ros.detect.metadata.OUTPUTS`)."""
    return TokenMerger(window, class_names) if output == "dense" else WindowMerger(window, class_names)


def merger_for(probabilities: np.ndarray, window: int, class_names: Sequence[str]) -> Merger:
    """The merger for stored probabilities: window ones (N, classes) or dense maps (N, classes, tokens, tokens)."""
    return make_merger("dense" if probabilities.ndim == 4 else "window", window, class_names)


def detections_from_windows(positions: np.ndarray, probabilities: np.ndarray, thresholds: Thresholds,
                            window: int, class_names: Sequence[str]) -> list[Detection]:
    """The detections a set of classified windows makes at ``thresholds`` (what the pipeline
    publishes for them; used to sweep thresholds offline): window probabilities (N, classes) or
    dense maps (N, classes, tokens, tokens)."""
    merger = merger_for(probabilities, window, class_names)
    merger.add(positions, probabilities, thresholds)
    return merger.flush()
