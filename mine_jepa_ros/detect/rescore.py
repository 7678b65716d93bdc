"""A detection's score from a window centred on it: the classifier asked again, where training put objects.

The window head learnt from crops centred on the object (and some off-centre ones), but the sliding
windows see an object anywhere in them: at the edge of a window its shadow runs out of the
picture, and that window's answer is the least reliable. A detection's score is its group's
*highest* window probability (:class:`~mine_jepa_ros.detect.merging.WindowMerger`), so one such
window can carry it. Once the detection is placed on the object (echo localisation,
:mod:`~mine_jepa_ros.detect.localise`), :class:`CentredRescorer` cuts the window centred on it,
classifies it as the tiles are classified (the same flip views) and scores the detection again
(``rescoring``, :data:`RESCORINGS`):

* ``windows``: the group's highest window probability, as it is (no extra forward pass);
* ``centred``: the centred window's probability of the detection's class.

A detection whose new score falls below its class threshold is dropped, so the thresholds stay
thresholds on the published score, and ``mine-jepa calibrate`` chooses them with the rescoring the
detector will run (it is part of the model's recipe, ``ModelMetadata.rescoring``).

The centred window is moved inside the pixels there are, as the tiler aligns its last window with a
border; a detection whose centre lies outside them (a ping stream's pings no longer held) keeps its
windows' score. Each detection costs one window (times the flip views), classified in one batch per call;
:meth:`CentredRescorer.rescore` remembers the answers per centre pixel for the same pixels (the
threshold sweep of scoring and calibration re-makes the same detections). Only numpy and the
classifier's ``predict``: the torch-free runtime rescoring the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mine_jepa_ros.detect.merging import Thresholds
from mine_jepa_ros.detect.metadata import RESCORINGS
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.detections import Detection


def check_rescoring(rescoring: str) -> str:
    """``rescoring`` if it is one of :data:`RESCORINGS`, else a UserError naming it."""
    if rescoring not in RESCORINGS:
        raise UserError(f"rescoring {rescoring!r}: expected one of {list(RESCORINGS)}")
    return rescoring


CentredAnswers = dict[tuple[int, int], np.ndarray]
"""Class probabilities of the window centred on each pixel (row, col), for one set of pixels."""


@dataclass(frozen=True)
class CentredRescorer:
    """Scores detections again from the windows centred on them (module docstring)."""

    predict: Callable[[np.ndarray], np.ndarray]  # (N, W, W) windows -> (N, classes), flip views included
    window: int
    class_names: Sequence[str]

    def origin(self, centre: tuple[float, float], shape: tuple[int, int], first_row: int = 0) -> tuple[int, int]:
        """Top-left (row in ``pixels``, col) of the window centred on ``centre`` (waterfall rows),
        moved inside ``shape`` (the pixels held, whose first row is ``first_row``)."""
        height, width = shape
        row = int(np.floor(centre[0])) - first_row - self.window // 2
        col = int(np.floor(centre[1])) - self.window // 2
        return int(np.clip(row, 0, height - self.window)), int(np.clip(col, 0, width - self.window))

    def rescore(self, detections: Sequence[Detection], pixels: np.ndarray, thresholds: Thresholds,
                first_row: int = 0, answers: CentredAnswers | None = None) -> list[Detection]:
        """``detections`` (made from windows of ``pixels``) with their scores from the centred windows;
        those below their class threshold dropped. ``answers`` remembers the centred windows'
        probabilities per centre pixel for the same ``pixels``."""
        if not detections:
            return []
        height, width = pixels.shape
        if height < self.window or width < self.window:
            raise ValueError(f"pixels {height}x{width} are smaller than the {self.window}-pixel window")
        answers = {} if answers is None else answers
        starts = [(int(np.floor(d.centre[0])), int(np.floor(d.centre[1]))) for d in detections]
        held = [first_row <= r < first_row + height and 0 <= c < width for r, c in starts]
        missing = sorted({s for s, inside in zip(starts, held) if inside and s not in answers})
        if missing:
            origins = [self.origin(s, (height, width), first_row) for s in missing]
            crops = np.stack([pixels[r:r + self.window, c:c + self.window] for r, c in origins]).astype(np.float32)
            for start, probs in zip(missing, self.predict(crops)):
                answers[start] = np.asarray(probs, np.float64)
        out = []
        floor = thresholds.indexed()
        for det, start, inside in zip(detections, starts, held):
            index = self.class_names.index(det.class_name)
            score = float(answers[start][index]) if inside else det.score
            if score >= floor[index]:
                out.append(Detection(det.class_name, score, det.box, det.id, det.stamp_ns, det.position_m))
        return out
