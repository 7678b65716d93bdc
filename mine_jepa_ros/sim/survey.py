"""Synthetic side-scan sonar survey simulator.

The simulator renders a straight survey line of a towfish flying at a fixed altitude over a
seabed. Every ping is one waterfall row with a port and a starboard channel of slant-range
samples; the waterfall is ``concatenate([flip(port), starboard])`` with nadir in the centre.

The physics is deliberately simple but geometrically right:

* the seabed is a height field ``z(y, x)`` (``y`` along-track, ``x`` ground range from nadir)
  with sand ripples, smooth mud and rough rock patches, each with its own reflectivity;
* objects (MILCO-like cylinders, truncated cones and spheres; NOMBO-like rocks, tyres and
  debris) are added to the height field and to the reflectivity map;
* backscatter is Lambertian: ``I = reflectivity * cos^2(incidence)``, where the incidence is
  taken from the local surface normal, so it falls with the grazing angle and object faces that
  look at the sonar give bright highlights;
* a ground point is in acoustic shadow when a nearer point on the same ping rises above the ray
  from the sonar to it (running minimum of the depression angle), which gives the shadow length
  ``H * x / (h - H)`` behind an object of height ``H`` at ground range ``x``;
* each ground point's echo lands in the slant-range bin ``sqrt(x^2 + (h - z)^2)``, so the
  water column ``r < h`` stays dark (the nadir gap) and tall objects lay over towards nadir;
* multiplicative speckle (exponential intensity for one look, gamma for ``L`` looks) and an
  additive noise floor finish the image.

Everything is vectorised numpy; a survey is deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np

from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geometry import ground_range_m
from mine_jepa_ros.io.detections import Detection

CLASS_NAMES: tuple[str, ...] = ("background", "MILCO", "NOMBO")
"""Class names in index order; index 0 is background, as in the detector."""

MILCO_SHAPES: tuple[str, ...] = ("cylinder", "truncated_cone", "sphere")
NOMBO_SHAPES: tuple[str, ...] = ("rock", "tyre", "debris")


@dataclass(frozen=True)
class SurveyConfig:
    """Every knob of a simulated survey line. Lengths in metres, angles in degrees.

    Attributes:
        pings: number of pings (waterfall rows).
        samples_per_side: slant-range samples per channel (port and starboard each).
        max_range_m: maximum slant range of each channel.
        altitude_m: towfish altitude above the mean seabed.
        ping_spacing_m: along-track distance between pings (speed / ping rate).
        ping_rate_hz: pings per second, used for message stamps.
        ground_oversample: ground-range grid points per slant-range sample.
        ripple_wavelength_m: sand ripple wavelength range (min, max).
        ripple_height_m: sand ripple crest-to-trough height range (min, max).
        rock_roughness_m: standard deviation of the height of rough rock patches.
        sand_fraction: fraction of the seabed that is rippled sand.
        rock_fraction: fraction of the seabed that is rock (the rest is mud).
        sand_reflectivity: mean backscatter reflectivity of sand.
        mud_reflectivity: mean backscatter reflectivity of mud.
        rock_reflectivity: mean backscatter reflectivity of rock.
        texture_scale_m: correlation length of the seabed type patches.
        swell_height_m: standard deviation of the smooth large-scale seabed relief.
        milco_count: number of mine-like objects to place.
        nombo_count: number of non-mine-like bottom objects to place.
        object_min_spacing_m: minimum along-track distance between two objects.
        object_ground_range_m: ground range interval (min, max) where objects are placed.
        speckle_looks: number of looks of the multiplicative speckle (1 = exponential intensity).
        noise_floor: additive noise intensity (mean of an exponential), relative to reflectivity.
        water_column_level: mean intensity of water-column scatter before the first bottom return.
        beam_falloff: strength of the far-range beam-pattern loss, ``exp(-falloff * (r/R)^beam_shape)``.
        beam_shape: exponent of that loss (2: Gaussian-like; larger: flatter near range, sharper edge).
        gain: overall receiver gain (intensity factor) of this survey's sonar setting.
        tvg_exponent: residual of an imperfect time-varied gain: intensity x ``(r / (R/2))^tvg_exponent``
            (0: perfectly compensated; > 0: far range too bright, near range too dark; < 0: the reverse).
        display_gain: amplitude that maps to full scale when converting to integers.
        seed: random seed; the same config gives the same survey.
    """

    pings: int = 2048
    samples_per_side: int = 1024
    max_range_m: float = 30.0
    altitude_m: float = 4.5
    ping_spacing_m: float = 0.05
    ping_rate_hz: float = 20.0
    ground_oversample: float = 1.5
    ripple_wavelength_m: tuple[float, float] = (0.6, 1.4)
    ripple_height_m: tuple[float, float] = (0.01, 0.03)
    rock_roughness_m: float = 0.03
    sand_fraction: float = 0.55
    rock_fraction: float = 0.12
    sand_reflectivity: float = 1.0
    mud_reflectivity: float = 0.45
    rock_reflectivity: float = 1.8
    texture_scale_m: float = 15.0
    swell_height_m: float = 0.15
    milco_count: int = 6
    nombo_count: int = 6
    object_min_spacing_m: float = 6.0
    object_ground_range_m: tuple[float, float] = (4.0, 24.0)
    speckle_looks: float = 1.0
    noise_floor: float = 0.01
    water_column_level: float = 0.003
    beam_falloff: float = 0.6
    beam_shape: float = 2.0
    gain: float = 1.0
    tvg_exponent: float = 0.0
    display_gain: float = 1.4
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "pings": self.pings >= 1,
            "samples_per_side": self.samples_per_side >= 8,
            "max_range_m": self.max_range_m > self.altitude_m,
            "altitude_m": self.altitude_m > 0.5,
            "ping_spacing_m": self.ping_spacing_m > 0,
            "ping_rate_hz": self.ping_rate_hz > 0,
            "ground_oversample": self.ground_oversample >= 1.0,
            "speckle_looks": self.speckle_looks > 0,
            "milco_count": self.milco_count >= 0,
            "nombo_count": self.nombo_count >= 0,
            "object_ground_range_m": 0 <= self.object_ground_range_m[0] < self.object_ground_range_m[1],
            "sand_fraction": 0 <= self.sand_fraction and 0 <= self.rock_fraction
            and self.sand_fraction + self.rock_fraction <= 1,
            "display_gain": self.display_gain > 0,
            "gain": self.gain > 0,
            "beam_shape": self.beam_shape > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UserError(f"invalid SurveyConfig field(s): {', '.join(bad)} ({self})")

    @property
    def slant_resolution_m(self) -> float:
        """Slant range covered by one sample."""
        return self.max_range_m / self.samples_per_side

    @property
    def max_ground_range_m(self) -> float:
        return ground_range_m(self.max_range_m, self.altitude_m)

    @property
    def track_length_m(self) -> float:
        return self.pings * self.ping_spacing_m


@dataclass(frozen=True)
class SimObject:
    """One object on the seabed and its ground truth in waterfall pixels.

    ``along_track_m`` / ``cross_track_m`` locate the object's centre (cross-track is the signed
    ground range; REP-103: positive = port, the waterfall's left). ``box`` is ``(row0, col0, row1, col1)`` in waterfall pixels,
    half-open, covering the highlight and the acoustic shadow.
    """

    class_name: str
    shape: str
    along_track_m: float
    cross_track_m: float
    height_m: float
    length_m: float
    width_m: float
    heading_deg: float
    box: tuple[int, int, int, int]

    @property
    def class_id(self) -> int:
        return CLASS_NAMES.index(self.class_name)

    @property
    def centre_px(self) -> tuple[float, float]:
        """(row, col) of the box centre."""
        r0, c0, r1, c1 = self.box
        return (r0 + r1) / 2.0, (c0 + c1) / 2.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ObjectPlacement:
    """A scripted object: where to put it instead of drawing it at random (tests, scenes)."""

    class_name: str
    shape: str
    along_track_m: float
    cross_track_m: float
    heading_deg: float = 0.0


@dataclass
class Survey:
    """A simulated survey: the waterfall (linear intensity, float32) and its ground truth."""

    config: SurveyConfig
    intensity: np.ndarray
    objects: list[SimObject] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.intensity.shape[1]

    def to_uint8(self) -> np.ndarray:
        """Amplitude image (sqrt of intensity) scaled by ``display_gain`` to 0..255."""
        return _to_integer(self.intensity, self.config.display_gain, 255).astype(np.uint8)

    def to_uint16(self) -> np.ndarray:
        """Amplitude image scaled by ``display_gain`` to 0..65535."""
        return _to_integer(self.intensity, self.config.display_gain, 65535).astype(np.uint16)

    def ground_truth(self, row0: int = 0, row1: int | None = None) -> list[Detection]:
        """Objects whose boxes overlap rows ``[row0, row1)``, clipped to them, rows relative to ``row0``.

        Each carries its metric position (along-track, signed cross-track ground range) and the id
        ``gt-<object index>``.
        """
        row1 = self.intensity.shape[0] if row1 is None else row1
        out = []
        for i, obj in enumerate(self.objects):
            r0, c0, r1, c1 = obj.box
            if r1 <= row0 or r0 >= row1:
                continue
            out.append(
                Detection(
                    class_name=obj.class_name,
                    score=1.0,
                    box=(float(max(r0, row0) - row0), float(c0), float(min(r1, row1) - row0), float(c1)),
                    id=f"gt-{i}",
                    position_m=(obj.along_track_m, obj.cross_track_m),
                )
            )
        return out

    def ping_stamps_ns(self, start_ns: int = 1_700_000_000_000_000_000) -> np.ndarray:
        """Ping times in nanoseconds, ``start_ns + i / ping_rate_hz``."""
        step = 1e9 / self.config.ping_rate_hz
        return start_ns + np.round(np.arange(self.config.pings) * step).astype(np.int64)


def _to_integer(intensity: np.ndarray, gain: float, full_scale: int) -> np.ndarray:
    amplitude = np.sqrt(np.maximum(intensity, 0.0)) / gain
    return np.clip(np.round(amplitude * full_scale), 0, full_scale)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field with correlation length ``cell`` pixels."""
    coarse = (max(2, int(math.ceil(shape[0] / cell[0])) + 2), max(2, int(math.ceil(shape[1] / cell[1])) + 2))
    grid = rng.standard_normal(coarse).astype(np.float32)
    field_ = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    field_ -= field_.mean()
    std = field_.std()
    return field_ / std if std > 0 else field_


class SurveySimulator:
    """Renders :class:`Survey` objects from a :class:`SurveyConfig`."""

    def __init__(self, config: SurveyConfig) -> None:
        self.config = config
        c = config
        self.n_ground = int(math.ceil(c.samples_per_side * c.ground_oversample))
        self.ground_step_m = c.max_ground_range_m / self.n_ground
        # Ground-range grid point centres for one side; x = 0 is directly below the towfish.
        self.ground_x = (np.arange(self.n_ground, dtype=np.float32) + 0.5) * self.ground_step_m
        flat_bins = self._slant_bins(np.broadcast_to(self.ground_x, (1, self.n_ground)), np.zeros((1, self.n_ground), np.float32))
        counts = np.bincount(flat_bins[flat_bins >= 0], minlength=c.samples_per_side)
        self._flat_counts = np.maximum(counts, 1).astype(np.float32)

    def _slant_bins(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        c = self.config
        r = np.sqrt(x * x + (c.altitude_m - z) ** 2)
        bins = np.floor(r / c.slant_resolution_m).astype(np.int64)
        bins[bins >= c.samples_per_side] = -1
        return bins

    def run(self, placements: list[ObjectPlacement] | None = None) -> Survey:
        """Render the survey; ``placements`` replaces the random objects with scripted ones."""
        c = self.config
        rng = np.random.default_rng(c.seed)
        height, reflect = self._seabed(rng)
        if placements is None:
            objects = self._place_objects(rng, height, reflect)
        else:
            objects = [self._place(rng, height, reflect, p) for p in placements]
        sides = [self._render_side(height[s], reflect[s]) for s in range(2)]
        port, starboard = sides
        intensity = np.concatenate([port[:, ::-1], starboard], axis=1)
        looks = c.speckle_looks
        intensity *= rng.gamma(looks, 1.0 / looks, size=intensity.shape).astype(np.float32)
        intensity += rng.exponential(c.noise_floor, size=intensity.shape).astype(np.float32)
        return Survey(config=c, intensity=intensity.astype(np.float32), objects=objects)

    # -- seabed ---------------------------------------------------------------------------------
    def _seabed(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Height and reflectivity, shape (2 sides, pings, n_ground)."""
        c = self.config
        shape = (c.pings, 2 * self.n_ground)  # both sides side by side: port mirrored | starboard
        cell = (c.texture_scale_m / c.ping_spacing_m, c.texture_scale_m / self.ground_step_m)
        kind_field = _smooth_noise(rng, shape, cell)
        # Quantile thresholds so the fractions hold for every seed.
        rock_level = np.quantile(kind_field, 1.0 - c.rock_fraction) if c.rock_fraction > 0 else np.inf
        sand_level = np.quantile(kind_field, 1.0 - c.rock_fraction - c.sand_fraction)
        rock = kind_field >= rock_level
        sand = (kind_field >= sand_level) & ~rock
        # Soft blending weights so patch borders are not razor sharp.
        y = (np.arange(c.pings, dtype=np.float32) * c.ping_spacing_m)[:, None]
        x_side = np.concatenate([-self.ground_x[::-1], self.ground_x])[None, :]
        wavelength = rng.uniform(*c.ripple_wavelength_m)
        ripple_h = rng.uniform(*c.ripple_height_m)
        angle = rng.uniform(0, math.pi)
        phase_noise = 2.0 * _smooth_noise(rng, shape, (4.0 / c.ping_spacing_m, 4.0 / self.ground_step_m))
        ripples = 0.5 * ripple_h * np.sin(2 * math.pi * (x_side * math.cos(angle) + y * math.sin(angle)) / wavelength + phase_noise)
        rough = c.rock_roughness_m * _smooth_noise(rng, shape, (0.4 / c.ping_spacing_m, 0.4 / self.ground_step_m))
        swell = c.swell_height_m * _smooth_noise(rng, shape, (cell[0] / 2, cell[1] / 2))
        height = swell + np.where(sand, ripples, 0.0) + np.where(rock, np.abs(rough), 0.0)
        base = np.where(rock, c.rock_reflectivity, np.where(sand, c.sand_reflectivity, c.mud_reflectivity))
        grain = np.exp(0.25 * _smooth_noise(rng, shape, (1.0 / c.ping_spacing_m, 1.0 / self.ground_step_m)))
        reflect = (base * grain).astype(np.float32)
        height = height.astype(np.float32)
        n = self.n_ground
        # Split into the two sides, each ordered by increasing ground range.
        h = np.stack([height[:, :n][:, ::-1], height[:, n:]])
        r = np.stack([reflect[:, :n][:, ::-1], reflect[:, n:]])
        return np.ascontiguousarray(h), np.ascontiguousarray(r)

    # -- objects --------------------------------------------------------------------------------
    def _place_objects(self, rng: np.random.Generator, height: np.ndarray, reflect: np.ndarray) -> list[SimObject]:
        c = self.config
        classes = ["MILCO"] * c.milco_count + ["NOMBO"] * c.nombo_count
        rng.shuffle(classes)
        margin = 3.0
        lo, hi = c.object_ground_range_m
        hi = min(hi, c.max_ground_range_m - 4.0)
        if hi <= lo or c.track_length_m < 2 * margin:
            return []  # the swath or the track is too short to hold an object with its shadow
        placed_y: list[float] = []
        objects: list[SimObject] = []
        for class_name in classes:
            for _attempt in range(200):
                y0 = rng.uniform(margin, c.track_length_m - margin)
                if all(abs(y0 - other) >= c.object_min_spacing_m for other in placed_y):
                    break
            else:
                break  # the track is full; place no more objects
            x0 = rng.uniform(lo, hi)
            side = -1 if rng.integers(0, 2) == 0 else 1
            shape = str(rng.choice(MILCO_SHAPES if class_name == "MILCO" else NOMBO_SHAPES))
            heading = float(rng.uniform(0, 180))
            placed_y.append(y0)
            objects.append(self._place(rng, height, reflect, ObjectPlacement(class_name, shape, y0, -side * x0, heading)))
        return objects

    def _place(self, rng: np.random.Generator, height: np.ndarray, reflect: np.ndarray, p: ObjectPlacement) -> SimObject:
        if p.class_name not in CLASS_NAMES[1:] or p.shape not in MILCO_SHAPES + NOMBO_SHAPES:
            raise ValueError(f"unknown object class/shape {p.class_name!r}/{p.shape!r}")
        side = 0 if p.cross_track_m > 0 else 1  # 0 = port (REP-103: y left, positive), 1 = starboard
        obj_h, length, width, box = self._stamp_object(
            rng, height[side], reflect[side], p.shape, p.along_track_m, abs(p.cross_track_m), p.heading_deg
        )
        return SimObject(
            class_name=p.class_name,
            shape=p.shape,
            along_track_m=float(p.along_track_m),
            cross_track_m=float(p.cross_track_m),
            height_m=float(obj_h),
            length_m=float(length),
            width_m=float(width),
            heading_deg=float(p.heading_deg),
            box=self._box_px(box, side),
        )

    def _stamp_object(
        self,
        rng: np.random.Generator,
        height: np.ndarray,
        reflect: np.ndarray,
        shape: str,
        y0: float,
        x0: float,
        heading_deg: float,
    ) -> tuple[float, float, float, tuple[float, float, float, float]]:
        """Add one object to the side's height/reflectivity maps (in place).

        Returns (height, length, width, (row0, row1, r_near, r_far)) where the last two are the
        slant ranges of the highlight's near edge and of the shadow's far end.
        """
        c = self.config
        half = 2.0  # metres around the centre that contain every shape
        r0 = max(0, int((y0 - half) / c.ping_spacing_m))
        r1 = min(c.pings, int((y0 + half) / c.ping_spacing_m) + 1)
        g0 = max(0, int((x0 - half) / self.ground_step_m))
        g1 = min(self.n_ground, int((x0 + half) / self.ground_step_m) + 1)
        if r1 <= r0 or g1 <= g0:
            raise ValueError(f"object at along-track {y0:.1f} m, ground range {x0:.1f} m is outside the survey")
        yy = (np.arange(r0, r1, dtype=np.float32)[:, None]) * c.ping_spacing_m - y0
        xx = self.ground_x[None, g0:g1] - x0
        th = math.radians(heading_deg)
        u = xx * math.cos(th) + yy * math.sin(th)  # along the object's axis
        v = -xx * math.sin(th) + yy * math.cos(th)
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        if shape == "cylinder":
            length, diam = rng.uniform(1.8, 3.0), rng.uniform(0.45, 0.6)
            rad = diam / 2
            inside = (np.abs(u) <= length / 2) & (np.abs(v) <= rad)
            z = np.where(inside, rad + np.sqrt(np.maximum(rad * rad - v * v, 0.0)), 0.0)
            width, refl = diam, rng.uniform(4.0, 6.0)
        elif shape == "truncated_cone":
            r_base, r_top, cone_h = rng.uniform(0.45, 0.6), rng.uniform(0.15, 0.25), rng.uniform(0.35, 0.5)
            z = cone_h * np.clip((r_base - rho) / (r_base - r_top), 0.0, 1.0)
            length = width = 2 * r_base
            refl = rng.uniform(4.0, 6.0)
        elif shape == "sphere":
            rad = rng.uniform(0.25, 0.45)
            z = np.where(rho <= rad, rad + np.sqrt(np.maximum(rad * rad - rho * rho, 0.0)), 0.0)
            length = width = 2 * rad
            refl = rng.uniform(4.0, 6.0)
        elif shape == "rock":
            r_mean = rng.uniform(0.4, 0.9)
            lobes = sum(rng.uniform(0.05, 0.2) * np.cos(k * phi + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
            outline = r_mean * (1 + lobes)
            rock_h = rng.uniform(0.2, 0.6)
            z = rock_h * np.sqrt(np.clip(1 - (rho / outline) ** 2, 0.0, 1.0))
            z *= 1 + 0.15 * rng.standard_normal(z.shape).astype(np.float32)
            length = width = 2 * r_mean
            refl = rng.uniform(1.5, 2.5)
        elif shape == "tyre":
            ring, tube = rng.uniform(0.28, 0.38), rng.uniform(0.09, 0.13)
            d = rho - ring
            z = np.where(np.abs(d) <= tube, tube + np.sqrt(np.maximum(tube * tube - d * d, 0.0)), 0.0)
            length = width = 2 * (ring + tube)
            refl = rng.uniform(1.2, 2.0)
        elif shape == "debris":
            pieces = int(rng.integers(2, 5))
            z = np.zeros_like(rho)
            for _ in range(pieces):
                cu, cv = rng.uniform(-0.8, 0.8, size=2)
                lu, lv = rng.uniform(0.15, 0.7, size=2)
                a = rng.uniform(0, math.pi)
                du = (u - cu) * math.cos(a) + (v - cv) * math.sin(a)
                dv = -(u - cu) * math.sin(a) + (v - cv) * math.cos(a)
                piece = (np.abs(du) <= lu / 2) & (np.abs(dv) <= lv / 2)
                z = np.maximum(z, np.where(piece, rng.uniform(0.1, 0.35), 0.0))
            length = width = 1.6
            refl = rng.uniform(1.5, 3.0)
        else:  # pragma: no cover - shapes come from the tuples above
            raise ValueError(f"unknown shape {shape!r}")
        z = z.astype(np.float32)
        mask = z > 0.01
        if not mask.any():
            raise ValueError(f"{shape} at along-track {y0:.1f} m, ground range {x0:.1f} m has no footprint on the grid")
        patch_h = height[r0:r1, g0:g1]
        base = patch_h.copy()
        np.maximum(patch_h, base + z, out=patch_h)
        reflect[r0:r1, g0:g1] = np.where(mask, refl, reflect[r0:r1, g0:g1])
        obj_height = float(z.max())
        # Ground truth extent: highlight near edge (layover of the top) to the shadow's far end.
        rows = np.nonzero(mask.any(axis=1))[0]
        xs = np.broadcast_to(self.ground_x[None, g0:g1], z.shape)[mask]
        zs = z[mask]
        h = c.altitude_m
        r_near = float(np.min(np.sqrt(xs**2 + (h - zs) ** 2)))
        shadow_end_x = float(np.max(xs * h / np.maximum(h - zs, 1e-3)))
        r_far = math.sqrt(shadow_end_x**2 + h**2)
        return obj_height, float(length), float(width), (r0 + rows[0], r0 + rows[-1] + 1, r_near, r_far)

    def _box_px(self, box: tuple[float, float, float, float], side: int) -> tuple[int, int, int, int]:
        c = self.config
        row0, row1, r_near, r_far = box
        s = c.samples_per_side
        b_near = int(math.floor(r_near / c.slant_resolution_m))
        b_far = min(s, int(math.ceil(r_far / c.slant_resolution_m)))
        if side == 1:
            col0, col1 = s + b_near, s + b_far
        else:
            col0, col1 = s - b_far, s - b_near
        return int(row0), int(col0), int(row1), int(col1)

    # -- rendering ------------------------------------------------------------------------------
    def _render_side(self, height: np.ndarray, reflect: np.ndarray) -> np.ndarray:
        """Slant-range intensity (pings, samples_per_side) for one side, ordered outwards."""
        c = self.config
        h = c.altitude_m
        x = np.broadcast_to(self.ground_x[None, :], height.shape)
        # Surface normal from the across-track and along-track slopes.
        dzdx = np.gradient(height, self.ground_step_m, axis=1)
        dzdy = np.gradient(height, c.ping_spacing_m, axis=0) if c.pings > 1 else np.zeros_like(height)
        # Unit vector from the ground point to the sonar (in the across-track plane).
        to_x, to_z = -x, h - height
        dist = np.sqrt(to_x * to_x + to_z * to_z)
        cos_inc = (-dzdx * to_x + to_z) / (dist * np.sqrt(1.0 + dzdx * dzdx + dzdy * dzdy))
        intensity = reflect * np.clip(cos_inc, 0.0, 1.0) ** 2
        # Shadow: visible only where the depression angle is below every nearer point's.
        depression = (h - height) / x
        running_min = np.minimum.accumulate(depression, axis=1)
        visible = depression <= running_min + 1e-6
        intensity = np.where(visible, intensity, 0.0)
        # Beam pattern loss towards far range, and the gain and time-varied gain of this setting.
        intensity *= c.gain * np.exp(-c.beam_falloff * (dist / c.max_range_m) ** c.beam_shape)
        if c.tvg_exponent:
            intensity *= (dist / (0.5 * c.max_range_m)) ** c.tvg_exponent
        # Accumulate every ground echo into its slant-range bin.
        bins = self._slant_bins(x, height)
        valid = bins >= 0
        rows = np.broadcast_to(np.arange(c.pings)[:, None], bins.shape)
        flat_index = rows[valid] * c.samples_per_side + bins[valid]
        acc = np.bincount(flat_index, weights=intensity[valid], minlength=c.pings * c.samples_per_side)
        out = acc.reshape(c.pings, c.samples_per_side).astype(np.float32) / self._flat_counts[None, :]
        # Water column before the first bottom return: weak volume scatter only.
        first_bottom = int(h / c.slant_resolution_m)
        out[:, :first_bottom] = c.water_column_level
        return out


@dataclass(frozen=True)
class FleetVariation:
    """How surveys differ across a fleet: each :meth:`draw` is one survey's sonar setting and seabed.

    Factors multiply the base configuration; ranges are drawn uniformly (gain log-uniformly)."""

    gain: tuple[float, float] = (0.5, 2.0)
    tvg_exponent: tuple[float, float] = (-0.6, 0.6)
    beam_falloff: tuple[float, float] = (0.2, 1.2)
    beam_shape: tuple[float, float] = (1.5, 3.0)
    max_range_factor: tuple[float, float] = (0.85, 1.15)  # same samples: range resolution varies too
    altitude_factor: tuple[float, float] = (0.8, 1.25)
    sand_fraction: tuple[float, float] = (0.3, 0.7)
    rock_fraction: tuple[float, float] = (0.04, 0.25)
    ripple_scale: tuple[float, float] = (0.6, 1.6)

    def draw(self, base: SurveyConfig, seed: int) -> SurveyConfig:
        """The configuration of one survey: ``base`` varied by draws seeded with ``seed``."""
        rng = np.random.default_rng([seed, 0x5EED])
        u = lambda lo_hi: float(rng.uniform(*lo_hi))  # noqa: E731
        max_range = base.max_range_m * u(self.max_range_factor)
        altitude = min(base.altitude_m * u(self.altitude_factor), 0.5 * max_range)
        ripple = u(self.ripple_scale)
        return replace(
            base, seed=seed, max_range_m=max_range, altitude_m=altitude,
            gain=float(np.exp(rng.uniform(*np.log(self.gain)))), tvg_exponent=u(self.tvg_exponent),
            beam_falloff=u(self.beam_falloff), beam_shape=u(self.beam_shape), sand_fraction=u(self.sand_fraction),
            rock_fraction=u(self.rock_fraction),
            ripple_wavelength_m=(base.ripple_wavelength_m[0] * ripple, base.ripple_wavelength_m[1] * ripple),
            object_ground_range_m=(base.object_ground_range_m[0],
                                   min(base.object_ground_range_m[1], 0.8 * ground_range_m(max_range, altitude))),
        )


def simulate_survey(
    config: SurveyConfig | None = None, placements: list[ObjectPlacement] | None = None, **overrides: object
) -> Survey:
    """Convenience wrapper: ``simulate_survey(SurveyConfig(seed=3))`` or ``simulate_survey(seed=3)``."""
    cfg = config or SurveyConfig()
    if overrides:
        cfg = SurveyConfig(**{**asdict(cfg), **overrides})  # type: ignore[arg-type]
    return SurveySimulator(cfg).run(placements)
