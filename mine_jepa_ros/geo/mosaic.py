"""A georeferenced mosaic of a side-scan survey: every sample on a UTM grid, written as a GeoTIFF.

Each ping's samples are placed as the contacts are (:mod:`mine_jepa_ros.geo.navigation`): the
navigation pose at the ping's stamp, the sensor moved by its lever arm and layback, then each sample
at its ground range ``√(slant² − altitude²)`` perpendicular to the heading (port to the left), on
the WGS84 ellipsoid, then projected to the UTM zone of the survey's first fix. Samples in the water
column (slant range below the altitude) are left out. Every grid cell holds the mean of the samples
that fall in it; cells no sample reached are nodata.

The recording is read twice, ping batch by ping batch: once for the bounds, once to accumulate, so
memory holds one batch and the grid (8 bytes a cell: ``--resolution`` sets its size; a grid over
:data:`MAX_CELLS` is refused). Pings in a navigation gap or without an altitude are counted, not
placed. The GeoTIFF (``uint8``: 1..255 the mean intensity, 0 nodata; its CRS the UTM zone's EPSG
code) is written atomically; so is the optional KML: a north-up PNG ``GroundOverlay`` (resampled to
latitude / longitude, nodata transparent) with the vehicle track and the contacts as placemarks.

``rasterio`` (the ``gis`` extra; its wheel bundles GDAL) writes the GeoTIFF; the rest needs pyproj
and numpy only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from pyproj import Transformer

from mine_jepa_ros.atomic import atomic_file, write_text_atomic
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geo.contacts import Contact
from mine_jepa_ros.geo.navigation import WGS84, NavigationTrack, SensorMounting, offset_position, utm_epsg
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.bag import ReadStats
from mine_jepa_ros.io.recording import Recording, row_runs

MAX_CELLS = 200_000_000  # 1.6 GB of accumulators
NODATA = 0


@dataclass(frozen=True)
class MosaicOptions:
    resolution_m: float = 0.25
    mounting: SensorMounting = field(default_factory=SensorMounting)
    batch_pings: int = 512

    def __post_init__(self) -> None:
        if not (self.resolution_m > 0 and math.isfinite(self.resolution_m)):
            raise UserError(f"--resolution must be a positive number of metres, got {self.resolution_m}")


@dataclass
class Mosaic:
    """The grid: mean intensity 0..1 (NaN where no sample fell), north row first."""

    mean: np.ndarray  # (rows, cols) float32
    west: float
    north: float
    resolution_m: float
    epsg: int
    pings: int = 0
    placed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the UTM zone's metres."""
        rows, cols = self.mean.shape
        return self.west, self.north - rows * self.resolution_m, self.west + cols * self.resolution_m, self.north

    def summary(self) -> str:
        rows, cols = self.mean.shape
        covered = float(np.isfinite(self.mean).mean()) if self.mean.size else 0.0
        lines = [f"{cols} x {rows} cells of {self.resolution_m:g} m on EPSG:{self.epsg} "
                 f"({covered:.0%} covered) from {self.placed} of {self.pings} pings"]
        if self.skipped:
            lines.append("pings not placed: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())))
        return "\n".join(lines)


def _ping_batches(recording: Recording, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(stamps (n,), rows (n, width)) of consecutive pings of one width."""
    for run in row_runs(recording.waterfall(ReadStats()), batch):
        yield np.array(run.stamps, np.int64), np.stack(run.rows)


class _Placer:
    """Samples of ping batches -> UTM east / north, with the pings that could not be placed counted."""

    def __init__(self, track: NavigationTrack, geometry: SonarGeometry, mounting: SensorMounting, epsg: int) -> None:
        self.track, self.geometry, self.mounting = track, geometry, mounting
        self.to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
        self.skipped: Counter[str] = Counter()
        self.pings = self.placed = 0

    def place(self, stamps: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(east, north, intensity) of every seabed sample of the batch."""
        width = rows.shape[1]
        slant = np.array([self.geometry.slant_range_m(c + 0.5, width) for c in range(width)])  # signed, port +
        lons, lats, azimuths, dists, values = [], [], [], [], []
        m = self.mounting
        for stamp, row in zip(stamps, rows):
            self.pings += 1
            pose = self.track.pose_at(int(stamp))
            if pose is None:
                self.skipped["navigation gap"] += 1
                continue
            altitude = pose.altitude_m if pose.altitude_m is not None else self.geometry.altitude_m
            if not (altitude > 0 and math.isfinite(altitude)):
                self.skipped["no altitude above the seabed"] += 1
                continue
            seabed = np.abs(slant) > altitude
            if not seabed.any():
                self.skipped["no sample beyond the water column"] += 1
                continue
            self.placed += 1
            sensor = offset_position(pose.latitude, pose.longitude, pose.heading_deg, m.offset_x_m - m.layback_m,
                                     m.offset_y_m)
            ground = np.sqrt(slant[seabed] ** 2 - altitude**2)
            n = int(seabed.sum())
            lons.append(np.full(n, sensor.longitude))
            lats.append(np.full(n, sensor.latitude))
            azimuths.append(np.where(slant[seabed] > 0, pose.heading_deg - 90.0, pose.heading_deg + 90.0))
            dists.append(ground)
            values.append(row[seabed])
        if not lons:
            return np.zeros(0), np.zeros(0), np.zeros(0, np.float32)
        lon, lat, _back = WGS84.fwd(np.concatenate(lons), np.concatenate(lats), np.concatenate(azimuths),
                                    np.concatenate(dists))
        east, north = self.to_utm.transform(lon, lat)
        return np.asarray(east), np.asarray(north), np.concatenate(values).astype(np.float32)


def build_mosaic(recording: Recording, track: NavigationTrack, options: MosaicOptions | None = None) -> Mosaic:
    """The mosaic of ``recording`` placed with ``track`` (see the module docstring)."""
    opts = options or MosaicOptions()
    if recording.mode != "pings":
        raise UserError("a mosaic needs one stamp per ping: a pings recording (simulate --mode pings, a side-scan "
                        "driver's topics, import-xtf); waterfall frames carry one stamp for many pings")
    geometry = recording.geometry
    if geometry is None:
        raise UserError("a mosaic needs the sonar geometry: --slant-resolution and --altitude, or the bag's sonar info")
    fixes = track.fix_samples()
    if not fixes:
        raise UserError("no navigation fix in the recording: nothing to place the pings with")
    epsg = utm_epsg(fixes[0][1], fixes[0][2])
    bounds = [math.inf, math.inf, -math.inf, -math.inf]
    placer = _Placer(track, geometry, opts.mounting, epsg)
    for stamps, rows in _ping_batches(recording, opts.batch_pings):
        east, north, _values = placer.place(stamps, rows)
        if east.size:
            bounds = [min(bounds[0], east.min()), min(bounds[1], north.min()), max(bounds[2], east.max()),
                      max(bounds[3], north.max())]
    if not placer.placed:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(placer.skipped.items())) or "no ping"
        raise UserError(f"no ping could be placed ({placer.pings} pings; {why})")
    res = opts.resolution_m
    west, north0 = math.floor(bounds[0] / res) * res, math.ceil(bounds[3] / res) * res
    cols = int((bounds[2] - west) // res) + 1  # the cell holding the easternmost sample is the last
    rows_n = int((north0 - bounds[1]) // res) + 1
    if rows_n * cols > MAX_CELLS:
        raise UserError(f"a {cols} x {rows_n} grid at {res:g} m is over {MAX_CELLS:,} cells: use a coarser --resolution")
    total = np.zeros(rows_n * cols, np.float64)
    count = np.zeros(rows_n * cols, np.float64)
    placer = _Placer(track, geometry, opts.mounting, epsg)
    for stamps, rows in _ping_batches(recording, opts.batch_pings):
        east, north, values = placer.place(stamps, rows)
        c = np.clip(((east - west) / res).astype(np.int64), 0, cols - 1)
        r = np.clip(((north0 - north) / res).astype(np.int64), 0, rows_n - 1)
        cell = r * cols + c
        total += np.bincount(cell, weights=values, minlength=total.size)
        count += np.bincount(cell, minlength=count.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan).astype(np.float32).reshape(rows_n, cols)
    return Mosaic(mean, west, north0, res, epsg, placer.pings, placer.placed, placer.skipped)


def write_geotiff(mosaic: Mosaic, path: Path | str) -> Path:
    """The mosaic as a single-band uint8 GeoTIFF (0 = nodata), written atomically."""
    import rasterio
    from rasterio.transform import from_origin

    path = Path(path)
    data = np.where(np.isfinite(mosaic.mean), np.clip(np.rint(np.nan_to_num(mosaic.mean) * 254) + 1, 1, 255), NODATA)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1, dtype="uint8",
                           crs=f"EPSG:{mosaic.epsg}", nodata=NODATA, compress="deflate",
                           transform=from_origin(mosaic.west, mosaic.north, mosaic.resolution_m, mosaic.resolution_m)) as dst:
            dst.write(data.astype(np.uint8), 1)
            dst.update_tags(SOFTWARE="mine_jepa_ros mosaic", RESOLUTION_M=str(mosaic.resolution_m))
    return path


def write_kml_overlay(mosaic: Mosaic, kml: Path | str, track: Sequence[tuple[float, float]] = (),
                      contacts: Sequence[Contact] = ()) -> tuple[Path, Path]:
    """A north-up PNG beside ``kml`` (latitude / longitude grid, nodata transparent) and the KML with
    its ``GroundOverlay``, the track as a LineString and a placemark per contact; both atomic."""
    import cv2

    kml = Path(kml)
    png = kml.with_suffix(".png")
    to_geo = Transformer.from_crs(f"EPSG:{mosaic.epsg}", "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{mosaic.epsg}", always_xy=True)
    w, s, e, n = mosaic.bounds
    corners_lon, corners_lat = to_geo.transform([w, e, w, e], [s, s, n, n])
    west, east, south, north = min(corners_lon), max(corners_lon), min(corners_lat), max(corners_lat)
    rows, cols = mosaic.mean.shape
    lat_step = mosaic.resolution_m / 111_320.0
    lon_step = lat_step / max(math.cos(math.radians((south + north) / 2)), 1e-6)
    nx, ny = max(int(math.ceil((east - west) / lon_step)), 1), max(int(math.ceil((north - south) / lat_step)), 1)
    lon_grid, lat_grid = np.meshgrid(west + (np.arange(nx) + 0.5) * (east - west) / nx,
                                     north - (np.arange(ny) + 0.5) * (north - south) / ny)
    ue, un = to_utm.transform(lon_grid.ravel(), lat_grid.ravel())
    c = ((np.asarray(ue) - mosaic.west) / mosaic.resolution_m).astype(np.int64)
    r = ((mosaic.north - np.asarray(un)) / mosaic.resolution_m).astype(np.int64)
    inside = (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
    values = np.full(c.size, np.nan, np.float32)
    values[inside] = mosaic.mean[r[inside], c[inside]]
    grey = np.clip(np.nan_to_num(values) * 255, 0, 255).astype(np.uint8).reshape(ny, nx)
    alpha = np.where(np.isfinite(values), 255, 0).astype(np.uint8).reshape(ny, nx)
    with atomic_file(png) as tmp:
        ok, encoded = cv2.imencode(".png", np.dstack([grey, grey, grey, alpha]))
        if not ok:
            raise UserError(f"{png}: could not encode the overlay")
        tmp.write_bytes(encoded.tobytes())
    marks = [f"  <Placemark><name>{escape(c.class_name)} {escape(c.id[:8])}</name>"
             f"<description>confidence {c.confidence:.2f}, {c.looks} look(s)</description>"
             f"<Point><coordinates>{c.longitude:.9f},{c.latitude:.9f},0</coordinates></Point></Placemark>"
             for c in contacts]
    if len(track) >= 2:
        coords = " ".join(f"{lon:.9f},{lat:.9f},0" for lat, lon in track)
        marks.append(f"  <Placemark><name>track</name><LineString><coordinates>{coords}</coordinates></LineString>"
                     "</Placemark>")
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2">\n<Document>\n'
            f"  <GroundOverlay><name>side-scan mosaic</name><Icon><href>{escape(png.name)}</href></Icon>"
            f"<LatLonBox><north>{north:.9f}</north><south>{south:.9f}</south><east>{east:.9f}</east>"
            f"<west>{west:.9f}</west></LatLonBox></GroundOverlay>\n" + "\n".join(marks) + "\n</Document>\n</kml>\n")
    write_text_atomic(kml, text)
    return kml, png

