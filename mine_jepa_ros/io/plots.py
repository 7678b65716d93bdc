"""Matplotlib helpers shared by the reports (headless, atomic PNG writes; matplotlib is the ``plots``
extra, imported only when a plot is drawn)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mine_jepa_ros.atomic import atomic_file
from mine_jepa_ros.errors import UserError


def require_matplotlib(what: str) -> None:
    """Fail before the work starts, not after it, where ``what`` needs plots that this install
    (the vehicle runtime has no matplotlib) cannot draw."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError(f"{what} draws plots with matplotlib, which this install does not have: "
                        "pip install 'mine_jepa_ros[plots]'")


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(ax: Any, matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> None:
    """A confusion matrix (rows true, columns predicted) with its counts written in."""
    cm = np.asarray(matrix)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_title(title)


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Save ``fig`` as a PNG atomically (:func:`~mine_jepa_ros.atomic.atomic_file`) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        pyplot().close(fig)
    return path
