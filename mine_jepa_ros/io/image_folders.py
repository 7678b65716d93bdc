"""Labelled image folders, the other half of the input layer: independent side-scan images with
their objects.

* **YOLO layout** (Santos et al. 2024, the Mine-JEPA paper's data; also what CVAT, Label Studio
  and LabelImg export, and what ``export-waterfalls`` writes): ``NNNN_YYYY.jpg`` beside
  ``NNNN_YYYY.txt`` with one ``class cx cy w h`` line per object (normalised to the image), class
  0 = MILCO, 1 = NOMBO; an empty ``.txt`` is a labelled image with no object, a missing one an
  unlabelled image. The year in the name (``_YYYY``) chooses surveys (``years``).
* **Mask layout** (SDVDs): ``*/images/NAME`` beside ``*/masks/NAME``, a binary object mask; each
  connected region of the mask is one object of class ``object``.

:class:`LabelledImage` is one image with its objects (pixel boxes ``(row0, col0, row1, col1)``),
read lazily so a folder of thousands of images costs nothing until it is used. A label line that
does not parse, or an image OpenCV cannot read, raises :class:`~mine_jepa_ros.errors.UserError`
naming the file and line; the tools skip that image, count it and go on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.detections import Detection

YOLO_CLASSES = ("MILCO", "NOMBO")
"""YOLO class index -> name in the Santos et al. layout."""
MASK_CLASS = "object"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
YEAR = re.compile(r"_(\d{4})$")


def image_year(path: Path) -> str | None:
    """The survey year of ``NNNN_YYYY.jpg``, or None."""
    found = YEAR.search(path.stem)
    return found.group(1) if found else None


def read_grey(path: Path) -> np.ndarray:
    """An image file as 8-bit grey; raises UserError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise UserError(f"{path}: not an image OpenCV can read")
    return image


def read_yolo_labels(txt: Path, height: int, width: int, class_names: Sequence[str] = YOLO_CLASSES) -> list[Detection]:
    """YOLO ``class cx cy w h`` (normalised; a sixth column, a score, is read too) -> detections in
    pixels; a bad line raises naming the file and line. A missing file is no object."""
    out: list[Detection] = []
    if not txt.exists():
        return out
    for n, line in enumerate(txt.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) not in (5, 6):
                raise ValueError(f"{len(parts)} columns")
            cls, (cx, cy, w, h) = int(parts[0]), (float(v) for v in parts[1:5])
            score = float(parts[5]) if len(parts) == 6 else 1.0
        except ValueError as exc:
            raise UserError(f"{txt}:{n}: expected 'class cx cy w h' (and an optional score), got {line!r}") from exc
        if not 0 <= cls < len(class_names) or not all(0 <= v <= 1 for v in (cx, cy, w, h)):
            names = ", ".join(f"{k} ({name})" for k, name in enumerate(class_names))
            raise UserError(f"{txt}:{n}: class must be one of {names} and coordinates in [0, 1]: {line!r}")
        box = ((cy - h / 2) * height, (cx - w / 2) * width, (cy + h / 2) * height, (cx + w / 2) * width)
        out.append(Detection(class_names[cls], score, box, id=f"{txt.stem}-{n}"))
    return out


def yolo_lines(detections: Sequence[Detection], height: int, width: int, class_names: Sequence[str],
               with_score: bool = True) -> str:
    """Detections as YOLO lines ``class cx cy w h [score]`` (normalised), the index into ``class_names``."""
    lines = []
    for det in detections:
        r0, c0, r1, c1 = det.box
        score = f" {det.score:.4f}" if with_score else ""
        lines.append(f"{class_names.index(det.class_name)} {(c0 + c1) / 2 / width:.6f} {(r0 + r1) / 2 / height:.6f} "
                     f"{(c1 - c0) / width:.6f} {(r1 - r0) / height:.6f}{score}")
    return "".join(f"{line}\n" for line in lines)


def mask_objects(mask: np.ndarray, name: str = "") -> list[Detection]:
    """Each connected region of a binary mask (> 127) as one ``object`` box."""
    count, _labels, stats, _centroids = cv2.connectedComponentsWithStats((mask > 127).astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, count):
        x, y, w, h = (int(v) for v in stats[k, :4])
        out.append(Detection(MASK_CLASS, 1.0, (float(y), float(x), float(y + h), float(x + w)), id=f"{name}-{k}"))
    return out


@dataclass(frozen=True)
class LabelledImage:
    """One image of a folder and where its objects come from (``labels``: a YOLO ``.txt`` or a mask)."""

    path: Path
    labels: Path | None  # None: unlabelled
    layout: str  # yolo | masks

    @property
    def name(self) -> str:
        return self.path.stem

    def pixels(self) -> np.ndarray:
        return read_grey(self.path)

    def objects(self, height: int, width: int) -> list[Detection] | None:
        """Its objects in pixels (None when unlabelled); raises UserError naming a bad label file."""
        if self.labels is None:
            return None
        if self.layout == "masks":
            mask = read_grey(self.labels)
            if mask.shape != (height, width):
                raise UserError(f"{self.labels}: mask of {mask.shape} for an image of {(height, width)}")
            return mask_objects(mask, self.name)
        return read_yolo_labels(self.labels, height, width)


LAYOUTS = ("auto", "yolo", "masks")


def list_images(folder: Path, layout: str = "auto") -> list[LabelledImage]:
    """Every image under ``folder`` in a layout, sorted by path (none where there is none): ``masks``
    takes ``*/images/NAME`` with a ``*/masks/NAME`` beside it, ``yolo`` every image file (those
    under a ``masks/`` folder excepted), ``auto`` masks where the folder has such pairs, else yolo."""
    if layout not in LAYOUTS:
        raise UserError(f"layout {layout!r}: expected one of {LAYOUTS}")
    if layout in ("auto", "masks"):
        pairs = sorted(p for p in folder.rglob("images/*") if (p.parent.parent / "masks" / p.name).is_file())
        if pairs or layout == "masks":
            return [LabelledImage(p, p.parent.parent / "masks" / p.name, "masks") for p in pairs]
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "masks" not in p.parts)
    return [LabelledImage(p, p.with_suffix(".txt") if p.with_suffix(".txt").is_file() else None, "yolo") for p in paths]


def folder_images(folder: Path, years: Sequence[str] = (), layout: str = "auto") -> list[LabelledImage]:
    """:func:`list_images`, ``years`` keeping the images of those survey years only; a folder that
    is missing or holds no such image is an error."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    found = list_images(folder, layout)
    if years:
        found = [image for image in found if image_year(image.path) in years]
    if not found:
        within = f" of the years {', '.join(years)}" if years else ""
        raise UserError(f"{folder}: no images{within} ({', '.join(IMAGE_SUFFIXES)})")
    return found
