"""Contacts as files a GIS or a mission planner reads, chosen by the file's extension.

* ``.geojson`` / ``.json``: an RFC 7946 FeatureCollection of Points (``[longitude, latitude]``,
  WGS84), the contact's fields as properties, plus ``name`` (a label) and ``style`` (Leaflet path
  options: ``color``, ``fillColor``, ``fillOpacity``, ``opacity``, ``weight``, ``radius``), which
  Foxglove's Map panel draws the point with; :func:`contacts_geojson_text` adds the vehicle track as
  a styled LineString (the node's ``~/contacts_geojson``);
* ``.kml``: one Placemark per contact (KML 2.2, ``longitude,latitude,0``);
* ``.csv``: ``id, class, confidence, looks, latitude, longitude, first_seen, last_seen`` (plus
  headings and uncertainty_m), times as ISO 8601 UTC;
* ``moos`` (``contacts --format moos``, any extension): MOOS-IvP hazard reports, one line
  ``hazard = x=…,y=…,label=…,type=hazard|benign`` per contact (the uFldHazardSensor / hazard-file
  form), in a local frame of metres east (x) and north (y) of a stated origin on its UTM grid, as
  MOOSGeodesy's ``LatOrigin`` / ``LongOrigin`` local grid is; mine-like classes are hazards.

Writes are atomic. :func:`read_geojson_points` reads such a file back (e.g. the mission
simulator's ``--truth`` file).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from mine_jepa_ros.atomic import write_text_atomic
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geo.contacts import Contact
from mine_jepa_ros.geo.navigation import utm_epsg
from mine_jepa_ros.io.annotations import class_rgb

FORMATS = {".geojson": "geojson", ".json": "geojson", ".kml": "kml", ".csv": "csv"}
KINDS = ("geojson", "kml", "csv", "moos")
HAZARD_CLASSES = frozenset({"MILCO"})  # mine-like: a MOOS hazard; every other class is benign
TRACK_POINTS = 2000  # the most track vertices a GeoJSON carries (the fixes are thinned evenly)
CSV_FIELDS = ["id", "class", "confidence", "looks", "latitude", "longitude", "first_seen", "last_seen", "headings",
              "uncertainty_m"]


def iso_time(stamp_ns: int) -> str:
    return datetime.fromtimestamp(stamp_ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def contact_properties(c: Contact) -> dict[str, Any]:
    return {"id": c.id, "class": c.class_name, "confidence": round(c.confidence, 4), "looks": c.looks,
            "headings": c.headings, "uncertainty_m": round(c.uncertainty_m, 3), "first_seen": iso_time(c.first_seen_ns),
            "last_seen": iso_time(c.last_seen_ns), "sightings": len(c.sightings)}


def hex_colour(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * min(max(v, 0.0), 1.0)):02x}" for v in rgb)


def contact_style(class_name: str) -> dict[str, Any]:
    """Leaflet path options for a contact's point (Foxglove's Map panel reads them from ``style``)."""
    colour = hex_colour(class_rgb(class_name))
    return {"color": colour, "fillColor": colour, "fillOpacity": 0.8, "opacity": 1.0, "weight": 2, "radius": 6}


def styled_contact_properties(c: Contact) -> dict[str, Any]:
    """The contact's fields with a ``name`` label and its ``style``."""
    return {**contact_properties(c), "name": f"{c.class_name} {c.id[:8]} ({c.confidence:.2f}, {c.looks} looks)",
            "style": contact_style(c.class_name)}


def _features(points: Sequence[tuple[float, float, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(lon, 9), round(lat, 9)]},
             "properties": props} for lat, lon, props in points]


def geojson_text(points: Sequence[tuple[float, float, dict[str, Any]]]) -> str:
    """(latitude, longitude, properties) -> an RFC 7946 FeatureCollection."""
    return json.dumps({"type": "FeatureCollection", "features": _features(points)}, indent=1) + "\n"


def contacts_geojson_text(contacts: Sequence[Contact], track: Sequence[tuple[float, float]] = ()) -> str:
    """Styled contact points and, when given, the vehicle track ((latitude, longitude) per fix) as a
    grey LineString of at most :data:`TRACK_POINTS` vertices: what Foxglove's Map panel shows."""
    features = _features([(c.latitude, c.longitude, styled_contact_properties(c)) for c in contacts])
    if len(track) >= 2:
        step = max(1, -(-len(track) // TRACK_POINTS))
        kept = [*track[::step], *([track[-1]] if (len(track) - 1) % step else [])]
        features.append({"type": "Feature", "geometry": {"type": "LineString",
                                                         "coordinates": [[round(lon, 9), round(lat, 9)] for lat, lon in kept]},
                         "properties": {"name": "vehicle track", "fixes": len(track),
                                        "style": {"color": "#9e9e9e", "opacity": 0.9, "weight": 2}}})
    return json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":")) + "\n"


def moos_text(contacts: Sequence[Contact], origin: tuple[float, float]) -> str:
    """MOOS-IvP hazard lines in metres east / north of ``origin`` (latitude, longitude) on its UTM grid."""
    from pyproj import Transformer

    lat0, lon0 = origin
    if not (-80.0 <= lat0 <= 84.0 and -180.0 <= lon0 <= 180.0):
        raise UserError(f"MOOS origin {lat0}, {lon0}: outside the UTM grid (latitude -80..84, longitude -180..180)")
    epsg = utm_epsg(lat0, lon0)
    zone = epsg % 100
    to_grid = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    e0, n0 = to_grid.transform(lon0, lat0)
    lines = ["// mine_jepa_ros contacts as MOOS-IvP hazard reports",
             f"// local frame: x east, y north (m) of LatOrigin = {lat0:.9f}, LongOrigin = {lon0:.9f} "
             f"on UTM zone {zone}{'N' if lat0 >= 0 else 'S'} (EPSG:{epsg})",
             f"// type: hazard for {', '.join(sorted(HAZARD_CLASSES))}, benign otherwise; label: the contact UUID's first 8 digits"]
    for c in contacts:
        e, n = to_grid.transform(c.longitude, c.latitude)
        kind = "hazard" if c.class_name in HAZARD_CLASSES else "benign"
        lines.append(f"hazard = x={e - e0:.2f},y={n - n0:.2f},label={c.id[:8]},type={kind}")
    return "\n".join(lines) + "\n"


def kml_text(contacts: Sequence[Contact]) -> str:
    marks = []
    for c in contacts:
        p = contact_properties(c)
        data = "".join(f'<Data name="{escape(k)}"><value>{escape(str(v))}</value></Data>' for k, v in p.items())
        marks.append(f"  <Placemark><name>{escape(c.class_name)} {escape(c.id[:8])}</name>"
                     f"<ExtendedData>{data}</ExtendedData>"
                     f"<Point><coordinates>{c.longitude:.9f},{c.latitude:.9f},0</coordinates></Point></Placemark>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2">\n<Document>\n'
            + "\n".join(marks) + "\n</Document>\n</kml>\n")


def csv_text(contacts: Sequence[Contact]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for c in contacts:
        p = contact_properties(c)
        writer.writerow({**{k: p[k] for k in CSV_FIELDS if k in p}, "latitude": f"{c.latitude:.9f}",
                         "longitude": f"{c.longitude:.9f}"})
    return buf.getvalue()


def write_contacts(contacts: Sequence[Contact], path: Path | str, kind: str | None = None,
                   origin: tuple[float, float] | None = None) -> Path:
    """Write ``contacts`` atomically, as ``kind`` (one of :data:`KINDS`) or, when None, in the format of
    ``path``'s extension (GeoJSON, KML or CSV); ``moos`` needs the local frame's ``origin``."""
    path = Path(path)
    kind = kind or FORMATS.get(path.suffix.lower())
    if kind not in KINDS:
        raise UserError(f"{path}: unknown contacts format {path.suffix!r}; use one of {sorted(FORMATS)} "
                        "(or --format moos)")
    if kind == "geojson":
        text = geojson_text([(c.latitude, c.longitude, styled_contact_properties(c)) for c in contacts])
    elif kind == "kml":
        text = kml_text(contacts)
    elif kind == "moos":
        if origin is None:
            raise UserError(f"{path}: MOOS hazard reports need the local frame's origin (no fix and no contact to take it from)")
        text = moos_text(contacts, origin)
    else:
        text = csv_text(contacts)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


def read_geojson_points(path: Path | str) -> list[tuple[float, float, dict[str, Any]]]:
    """(latitude, longitude, properties) of every Point feature of a GeoJSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return [(float(f["geometry"]["coordinates"][1]), float(f["geometry"]["coordinates"][0]), dict(f.get("properties") or {}))
                for f in data["features"] if f["geometry"]["type"] == "Point"]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise UserError(f"{path}: not a GeoJSON FeatureCollection of Points ({exc})") from exc
