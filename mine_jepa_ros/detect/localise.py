"""Where a detection is: its centre moved from the windows onto the object's echo.

The window head says *that* a window holds an object, not where in it: the merger's centre is a
weighted mean of window centres (:class:`~mine_jepa_ros.detect.merging.WindowMerger`), so at stride
48 it is only known to a fraction of the window grid (about 0.8 m on the demo's surveys). The
object itself is in the pixels: its highlight is brighter, and its shadow darker, than the seabed
at the same range. :class:`EchoLocaliser` moves each detection's centre onto that contrast:

1. around the detection's centre, a square of ``2 x background`` pixels (the window size) is
   smoothed with a ``smooth`` x ``smooth`` box filter (speckle);
2. each column's seabed level is the median of that column over the square's rows, so the range
   trend of the sonar's gain and beam pattern cancels and what stands out is the object:
   ``contrast = |smoothed - column median|``;
3. the centre becomes the centroid of the contrast within ``reach`` pixels of it, weighted by how
   far each pixel's contrast exceeds the ``quantile`` of that neighbourhood (the strongest fifth:
   highlight and shadow, not the speckle left over); repeated ``iterations`` times.

The defaults were chosen on 15 simulated development surveys (12 drawn for it, seeds 70001-70012,
and the demo's 3 validation surveys), never on the demo's test surveys: the 0.8 quantile and 3
iterations placed the demo model's MILCO 0.28 m from the object (0.91 m at the windows' centres)
with the same AP (0.80); a 0.9 quantile or a 40-pixel reach lost 0.02-0.04 AP by pulling some
detections onto a neighbour.

**One detection per echo.** Two detections of one class can land on the same echo: a component of
overlapping windows with two peaks (:class:`~mine_jepa_ros.detect.merging.WindowMerger`), one at
each end of an object, becomes two detections whose centres the localiser pulls together.
:meth:`EchoLocaliser.distinct` keeps the one with the higher score (the centred window's, where
the detections are rescored) of any two of a class whose centres lie within ``reach`` pixels (one
centroid neighbourhood: the same contrast), as non-maximum suppression keeps one box per object.
Detections of different classes on one echo are both kept (decisions are per class: dropping a
MILCO under a higher-scored NOMBO lost MILCO AP on the demo's validation surveys, where radii of
16 to 48 pixels within a class did equally well; README, *One detection per echo*).

A ping stream publishes detections as their windows are complete, so there a new detection is
also dropped near an earlier published one of its class, which stays (it cannot be taken back).
The stream then keeps the earlier of the two where a frame keeps the higher score; that only
happens when the localiser pulls the detections of two separate groups of windows onto one echo
(a group's detections are published together).

The box keeps its size and is moved with the centre; the score and the id are unchanged. The
centre moves at most ``iterations x reach`` pixels, and where the neighbourhood is flat (no
contrast above the quantile) it stays where the windows put it. The square is clipped to the
pixels there are: a frame's borders, or in a ping stream the pings still held (the pipeline holds
enough that a detection's square is complete when the merger publishes it, so a stream and the
same waterfall as one frame give the same centres).

Only numpy: the vehicle runtime (ONNX, no torch) localises the same way. ``localisation``
(:data:`LOCALISATIONS`): ``echo`` (this), or ``windows`` (the merger's centre as it is, to compare).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.detections import Detection

LOCALISATIONS = ("echo", "windows")


def check_localisation(localisation: str) -> str:
    """``localisation`` if it is one of :data:`LOCALISATIONS`, else a UserError naming it."""
    if localisation not in LOCALISATIONS:
        raise UserError(f"localisation {localisation!r}: expected one of {list(LOCALISATIONS)}")
    return localisation


def box_filter(image: np.ndarray, size: int) -> np.ndarray:
    """The mean over a ``size`` x ``size`` neighbourhood of every pixel (borders repeated)."""
    if size <= 1:
        return image.astype(np.float64)
    half = size // 2
    padded = np.pad(image.astype(np.float64), ((half + 1, size - half - 1), (half + 1, size - half - 1)), mode="edge")
    padded[0, :] = 0.0
    padded[:, 0] = 0.0
    sums = padded.cumsum(axis=0).cumsum(axis=1)
    h, w = image.shape
    total = sums[size:size + h, size:size + w] - sums[:h, size:size + w] - sums[size:size + h, :w] + sums[:h, :w]
    return total / (size * size)


@dataclass(frozen=True)
class EchoLocaliser:
    """Moves detection centres onto the echo's contrast (see the module docstring); pixel sizes."""

    background: int = 96  # half-size of the square the seabed level is taken over (the window)
    reach: int = 32  # half-size of the neighbourhood the centroid is taken over
    smooth: int = 5  # box filter against speckle
    quantile: float = 0.8  # only contrast above this quantile of the neighbourhood weighs
    iterations: int = 3

    def locate(self, pixels: np.ndarray, row: float, col: float, first_row: int = 0) -> tuple[float, float]:
        """The echo's centre near (``row``, ``col``) in ``pixels``, whose first row is row
        ``first_row`` of the waterfall (a ping stream's held pings); rows in the waterfall's count.
        Where there is none (:meth:`echo_centre`), (``row``, ``col``) as given."""
        found = self.echo_centre(pixels, int(np.floor(row)), int(np.floor(col)), first_row)
        return (row, col) if found is None else found

    def echo_centre(self, pixels: np.ndarray, row: int, col: int, first_row: int = 0) -> tuple[float, float] | None:
        """The echo's centre found from pixel (``row``, ``col``) (a start is only ever used to the
        pixel, so this is what :meth:`locate` finds from anywhere in it); None where the pixel is not
        in ``pixels`` (a stream's pings no longer held) or its neighbourhood has no contrast above
        the quantile (a flat seabed)."""
        height, width = pixels.shape
        r, c = row - first_row, col
        if not (0 <= r < height and 0 <= c < width):
            return None
        r0, r1 = max(0, r - self.background), min(height, r + self.background)
        c0, c1 = max(0, c - self.background), min(width, c + self.background)
        if r1 - r0 < 2 or c1 - c0 < 2:
            return None
        smoothed = box_filter(pixels[r0:r1, c0:c1], self.smooth)
        contrast = np.abs(smoothed - np.median(smoothed, axis=0, keepdims=True))
        found = None
        at_row, at_col = r, c  # the pixel the neighbourhood is taken around
        for _ in range(self.iterations):
            a0, a1 = max(0, at_row - self.reach - r0), min(r1 - r0, at_row + self.reach - r0)
            b0, b1 = max(0, at_col - self.reach - c0), min(c1 - c0, at_col + self.reach - c0)
            if a1 <= a0 or b1 <= b0:
                break
            near = contrast[a0:a1, b0:b1]
            weights = np.maximum(near - np.quantile(near, self.quantile), 0.0)
            total = weights.sum()
            if total <= 0.0:
                break
            rows, cols = np.mgrid[a0:a1, b0:b1]
            found = (r0 + float((rows * weights).sum() / total) + 0.5, c0 + float((cols * weights).sum() / total) + 0.5)
            at_row, at_col = int(np.floor(found[0])), int(np.floor(found[1]))
        return None if found is None else (found[0] + first_row, found[1])

    def relocate(self, detections: Sequence[Detection], pixels: np.ndarray, first_row: int = 0,
                 found: dict[tuple[int, int], tuple[float, float] | None] | None = None) -> list[Detection]:
        """``detections`` with their centres (and boxes, moved with them) on the echo; ``found``
        remembers each start pixel's :meth:`echo_centre` for the same ``pixels`` (the threshold
        sweep makes detections from the same pixels again and again)."""
        found = {} if found is None else found
        out = []
        for det in detections:
            row, col = det.centre
            start = (int(np.floor(row)), int(np.floor(col)))
            if start not in found:
                found[start] = self.echo_centre(pixels, *start, first_row)
            centre = found[start]
            out.append(det if centre is None else det.shifted(centre[0] - row, centre[1] - col))
        return out

    def distinct(self, detections: Sequence[Detection], earlier: Sequence[Detection] = ()) -> list[Detection]:
        """``detections`` in their order, less each one whose centre lies within ``reach`` pixels of
        a higher-scored one of its class (equal scores: the first stands) or of one of ``earlier``
        (already published) of its class: one detection per echo (module docstring)."""
        if len(detections) < 2 and not earlier:
            return list(detections)
        everything = [*earlier, *detections]
        centres = np.array([d.centre for d in everything], np.float64).reshape(-1, 2)
        classes = np.array([d.class_name for d in everything])
        near = (((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2) < self.reach ** 2) & (
            classes[:, None] == classes[None, :])
        first = len(earlier)  # published: they stand, and drop the new ones near them
        kept = np.zeros(len(detections), bool)
        dropped = near[:first, first:].any(axis=0)
        order = sorted(range(len(detections)), key=lambda i: -detections[i].score)  # stable: equal scores keep their order
        for i in order:
            if not dropped[i]:
                kept[i] = True
                dropped |= near[first + i, first:]
        return [d for d, keep in zip(detections, kept) if keep]
