"""Contacts as files a GIS or a mission planner reads, chosen by the file's extension.

* ``.geojson`` / ``.json``: an RFC 7946 FeatureCollection of Points (``[longitude, latitude]``,
  WGS84), the contact's fields as properties;
* ``.kml``: one Placemark per contact (KML 2.2, ``longitude,latitude,0``);
* ``.csv``: ``id, class, confidence, looks, latitude, longitude, first_seen, last_seen`` (plus
  headings and uncertainty_m), times as ISO 8601 UTC.

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

FORMATS = {".geojson": "geojson", ".json": "geojson", ".kml": "kml", ".csv": "csv"}
CSV_FIELDS = ["id", "class", "confidence", "looks", "latitude", "longitude", "first_seen", "last_seen", "headings",
              "uncertainty_m"]


def iso_time(stamp_ns: int) -> str:
    return datetime.fromtimestamp(stamp_ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def contact_properties(c: Contact) -> dict[str, Any]:
    return {"id": c.id, "class": c.class_name, "confidence": round(c.confidence, 4), "looks": c.looks,
            "headings": c.headings, "uncertainty_m": round(c.uncertainty_m, 3), "first_seen": iso_time(c.first_seen_ns),
            "last_seen": iso_time(c.last_seen_ns), "sightings": len(c.sightings)}


def geojson_text(points: Sequence[tuple[float, float, dict[str, Any]]]) -> str:
    """(latitude, longitude, properties) -> an RFC 7946 FeatureCollection."""
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(lon, 9), round(lat, 9)]},
                 "properties": props} for lat, lon, props in points]
    return json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n"


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


def write_contacts(contacts: Sequence[Contact], path: Path | str) -> Path:
    """Write ``contacts`` in the format of ``path``'s extension (GeoJSON, KML or CSV), atomically."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: unknown contacts format {path.suffix!r}; use one of {sorted(FORMATS)}")
    if kind == "geojson":
        text = geojson_text([(c.latitude, c.longitude, contact_properties(c)) for c in contacts])
    elif kind == "kml":
        text = kml_text(contacts)
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
