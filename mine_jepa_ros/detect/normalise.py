"""Per-recording intensity normalisation, online, per range bin: the same in training and on the vehicle.

Side-scan intensity differs between surveys by multiplicative effects that depend on range: the
sonar's gain, its time-varied gain, the beam pattern, the seabed's mean backscatter. A detector
trained on some surveys then sees another survey's seabed as brighter or darker at some ranges,
and fires along them (a row of false alarms along the near range of a dark seabed). The paper
normalises each data source with its own statistics; on a vehicle the statistics must come from
the pings already received.

:class:`RangeNormaliser` keeps, per range bin (column), the running mean intensity of the pings
seen so far: a plain mean at first, then (once a new ping's weight in the plain mean falls below
its weight in the exponential one, after about 1.44 half-lives) an exponential mean whose weight
on a ping halves every ``half_life_pings`` pings, so it follows a change of seabed or gain within
a few hundred pings. Each ping is divided by its bins' running means (the ping included:
causal, no look-ahead) and scaled to ``target_mean``; the result is clipped to [0, 1]. It works
ping by ping, so a frame of 512 rows and the same rows as 512 pings give identical output, and a
recording read as frames, as pings or as driver messages is normalised identically.

Where it applies: a model whose metadata says ``input_normalisation: range`` (a probe on a store
extracted with ``--normalise range``) has its inputs normalised by the pipeline (node, replay,
calibrate; torch and ONNX alike), one normaliser per stream, reset when the ping width changes.
Extraction applies the same normaliser to every recording, survey or image before cutting
windows, so the model is trained on what it will see.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from mine_jepa_ros.errors import UserError

NORMALISATIONS = ("none", "range")


@dataclass(frozen=True)
class NormalisationConfig:
    """How inputs are normalised: ``kind`` (none | range) and the range normaliser's settings."""

    kind: str = "none"
    half_life_pings: float = 256.0
    target_mean: float = 0.2
    floor: float = 0.02  # added to a bin's mean before dividing: the water column stays dark, not noise

    def __post_init__(self) -> None:
        if self.kind not in NORMALISATIONS:
            raise UserError(f"normalisation {self.kind!r}: expected one of {NORMALISATIONS}")
        if not self.half_life_pings >= 1 or not 0 < self.target_mean < 1 or not self.floor > 0:
            raise UserError(f"normalisation: half_life_pings must be >= 1, target_mean within (0, 1) and floor > 0, "
                            f"got {self.half_life_pings}, {self.target_mean}, {self.floor}")

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def to_dict(self) -> dict[str, float | str]:
        return {"kind": self.kind, "half_life_pings": self.half_life_pings, "target_mean": self.target_mean,
                "floor": self.floor}

    @classmethod
    def from_dict(cls, data: dict[str, object] | None) -> NormalisationConfig:
        """From metadata (``None`` or ``{}``: none); a bad value raises UserError naming it."""
        if not data:
            return cls()
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"normalisation: unknown keys {unknown}")
        try:  # the kind is a name, every setting a number; missing ones keep their defaults
            return cls(**{k: str(v) if k == "kind" else float(v) for k, v in data.items()})  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise UserError(f"normalisation: {exc}") from exc


class RangeNormaliser:
    """Running per-range-bin mean of a ping stream, and each ping divided by it (see the module)."""

    def __init__(self, config: NormalisationConfig) -> None:
        self.config = config
        self._decay = 0.5 ** (1.0 / config.half_life_pings)
        self._mean: np.ndarray | None = None
        self.pings = 0

    def reset(self) -> None:
        self._mean = None
        self.pings = 0

    @property
    def mean(self) -> np.ndarray | None:
        """The running mean per range bin (None before the first ping)."""
        return None if self._mean is None else self._mean.copy()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Rows (pings) of intensities 0..1, in order -> the same rows normalised (float32).
        A change of width starts a new stream (the sonar's range setting changed)."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError(f"expected (pings, samples) rows, got shape {rows.shape}")
        if self._mean is not None and self._mean.shape[0] != rows.shape[1]:
            self.reset()
        if self._mean is None:
            self._mean = np.zeros(rows.shape[1], np.float64)
        out = np.empty_like(rows)
        mean = self._mean
        scale = self.config.target_mean
        floor = self.config.floor
        for k in range(rows.shape[0]):
            self.pings += 1
            weight = max(1.0 / self.pings, 1.0 - self._decay)  # a plain mean first, exponential later
            mean += weight * (rows[k] - mean)
            out[k] = rows[k] * (scale / (mean + floor))
        np.clip(out, 0.0, 1.0, out=out)
        return out


def normalise_image(pixels: np.ndarray, config: NormalisationConfig) -> np.ndarray:
    """One whole recording or image (rows in ping order) through a fresh normaliser; unchanged for ``none``."""
    if not config.active:
        return pixels
    return RangeNormaliser(config)(pixels)
