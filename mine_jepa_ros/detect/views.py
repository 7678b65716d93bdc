"""Flip views: each window classified as it is and mirrored, the views' outputs averaged.

A side-scan window keeps its meaning under two mirrors: along track (the pings in reverse order,
as on the reciprocal survey line) and across track (port seen as starboard: the shadow falls the
other way, as it does on the other side of the vehicle). Training flips windows both ways
(:mod:`mine_jepa_ros.training.probe`), but a trained network is not exactly invariant to them, so a
window and its mirror images give slightly different answers; averaging them is a small ensemble
for the cost of more forward passes. ``views`` (``ModelMetadata.flip_views``,
:data:`~mine_jepa_ros.detect.metadata.FLIP_VIEWS`):

* 1: the window as it is;
* 2: also mirrored along track (rows reversed);
* 4: also mirrored across track (columns reversed), and both.

A dense head's maps are mirrored back before averaging, so each token is averaged with the views'
answers for the same patch of seabed.

**The average is the normalised geometric mean** of the views' probabilities: ``softmax(mean_v log
p_v)`` over the class axis, which equals the softmax of the views' mean logits. A temperature then
commutes with the average: views run at temperature ``T`` give exactly ``softmax_with_temperature``
of the views run at 1, so the operating point ``mine-jepa calibrate`` fits on the average of raw
views is the one the detector meets at run time (an arithmetic mean of probabilities would shift it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mine_jepa_ros.detect.metadata import FLIP_VIEWS
from mine_jepa_ros.errors import UserError

_TINY = 1e-30  # probabilities are clipped here before the logarithm (a float32 softmax can underflow to 0)


def check_flip_views(views: int) -> int:
    """``views`` if it is one of :data:`FLIP_VIEWS`, else a UserError naming it."""
    if views not in FLIP_VIEWS:
        raise UserError(f"flip_views {views!r}: expected one of {FLIP_VIEWS} (1: the window as it is; 2: also mirrored "
                        "along track; 4: also across track, and both)")
    return views


def _mirrors(views: int) -> list[tuple[bool, bool]]:
    """(rows reversed, columns reversed) of each view."""
    return [(False, False), (True, False), (False, True), (True, True)][:views]


def geometric_mean(probabilities: np.ndarray) -> np.ndarray:
    """(V, N, classes, ...) probabilities of V views -> (N, classes, ...): softmax over the class axis
    of the views' mean log-probability."""
    logs = np.log(np.maximum(probabilities.astype(np.float64), _TINY)).mean(axis=0)
    logs -= logs.max(axis=1, keepdims=True)
    out = np.exp(logs)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def flip_averaged(predict: Callable[[np.ndarray], np.ndarray], patches: np.ndarray, views: int) -> np.ndarray:
    """``predict`` ((N, H, W) windows -> (N, classes) or (N, classes, T, T)) averaged over ``views``
    mirrored views of ``patches`` (module docstring); one call of ``predict`` on all views together."""
    check_flip_views(views)
    if views == 1 or len(patches) == 0:
        return predict(patches)
    mirrors = _mirrors(views)
    stacked = np.concatenate([patches[:, ::-1 if rows else 1, ::-1 if cols else 1] for rows, cols in mirrors])
    flat = predict(np.ascontiguousarray(stacked))
    outputs = flat.reshape(views, len(patches), *flat.shape[1:])
    if outputs.ndim == 5:  # dense maps (V, N, classes, T, T): mirror each view's map back onto the window
        outputs = np.stack([out[:, :, ::-1 if rows else 1, ::-1 if cols else 1] for out, (rows, cols) in zip(outputs, mirrors)])
    return geometric_mean(outputs)
