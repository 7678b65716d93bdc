"""Side-scan geometry: waterfall pixels <-> metres (flat seabed).

The waterfall is ``concatenate([flip(port), starboard])``: nadir is at column ``width / 2`` and the
signed slant range of column ``c`` is ``(width / 2 - c) * slant_resolution_m``. Signs follow REP-103
(x forward, **y left**): port (the waterfall's left half) is positive, starboard negative. A return
at slant range ``r`` from a sonar at altitude ``h`` over a flat seabed lies at ground range
``sqrt(r^2 - h^2)`` from the track (0 inside the water column, ``|r| < h``); signed cross-track
distances keep the slant range's sign (see docs/design.md, *Coordinate frames*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def ground_range_m(slant_range_m: float, altitude_m: float) -> float:
    """Signed ground range of a return at signed slant range ``slant_range_m`` (sign kept, 0 at nadir)."""
    ground = math.sqrt(max(slant_range_m * slant_range_m - altitude_m * altitude_m, 0.0))
    return math.copysign(ground, slant_range_m)


def slant_range_of_column(col: float, width: int, slant_resolution_m: float) -> float:
    """Signed slant range of waterfall column ``col`` (REP-103: port, the left half, positive)."""
    return (width / 2 - col) * slant_resolution_m


@dataclass(frozen=True)
class SonarGeometry:
    """What turns a waterfall pixel into metres: slant range per sample, altitude, ping spacing."""

    slant_resolution_m: float
    altitude_m: float
    ping_spacing_m: float

    @classmethod
    def from_values(cls, slant_resolution_m: float, altitude_m: float, ping_spacing_m: float) -> SonarGeometry | None:
        """The geometry when all three values are known (> 0), else None (positions unavailable)."""
        if slant_resolution_m > 0 and altitude_m > 0 and ping_spacing_m > 0:
            return cls(slant_resolution_m, altitude_m, ping_spacing_m)
        return None

    def slant_range_m(self, col: float, width: int) -> float:
        """Signed slant range of waterfall column ``col`` (REP-103: port positive)."""
        return slant_range_of_column(col, width, self.slant_resolution_m)

    def cross_track_m(self, col: float, width: int) -> float:
        """Signed ground range of waterfall column ``col`` (REP-103: port positive)."""
        return ground_range_m(self.slant_range_m(col, width), self.altitude_m)

    def position_m(self, row: float, col: float, width: int) -> tuple[float, float]:
        """(x along track, y signed cross-track ground range, port positive) of a pixel, in metres."""
        return row * self.ping_spacing_m, self.cross_track_m(col, width)
