"""``mine-jepa report``: the post-mission contact report, one self-contained HTML page.

The page (``DIR/report.html``: no network, every image embedded as a PNG data URI) holds:

* a summary: pings, survey lines (runs of steady heading), track length, swept area (track length
  x swath width), contacts by class, and, with a truth GeoJSON (``simulate --truth``), Pd per class
  and false contacts (per km²) at a match distance;
* a map (inline SVG, metres east / north of the first fix): the track, the contacts by class, the
  true objects;
* one card per contact: a waterfall snippet of every look (the look's best detection, its box
  drawn), class, confidence, latitude, longitude, uncertainty, looks, headings, first and last seen;
* sorting (confidence, class, first seen), an accept / reject choice per card, and buttons that
  export the reviewed list as CSV or GeoJSON (plain JavaScript, ``window.reviewExport(kind)`` returns
  the text the buttons download).

The detections come from a model (the pipeline as ``replay`` runs it), from a detections bag
(``replay``'s output, ``detections``), or from the recording itself (a bag recorded from the node);
they are located and fused exactly as ``contacts`` does. Every string that comes from a file (class
names of a model or a bag, the bag's name, frame ids) is HTML-escaped where it is written; nothing
from a file is ever put into the page's script. ``DIR/contacts.geojson`` holds the unreviewed
contacts. The recording is read once more for the snippets, streamed: only a snippet's rows are
held.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mine_jepa_ros.atomic import write_text_atomic
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.evaluate.review import FoundDetections, model_detections, recorded_detections
from mine_jepa_ros.geo.contacts import Contact, Sighting
from mine_jepa_ros.geo.formats import hex_colour, iso_time, read_geojson_points, write_contacts
from mine_jepa_ros.geo.navigation import WGS84, NavigationTrack
from mine_jepa_ros.geo.tracking import ContactOptions, ContactTracker, navigation_from_bag
from mine_jepa_ros.geometry import ground_range_m
from mine_jepa_ros.io.annotations import class_rgb
from mine_jepa_ros.io.bag import ReadStats
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import stamp_ns
from mine_jepa_ros.io.pictures import to_display
from mine_jepa_ros.io.recording import Recording, RecordingOptions, open_recording, waterfall_width


@dataclass(frozen=True)
class ReportOptions:
    recording: RecordingOptions = field(default_factory=RecordingOptions)
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    detections_bag: Path | None = None  # None: the recording's own detections (without a model)
    detections_topic: str | None = None
    contact_options: ContactOptions = field(default_factory=ContactOptions)
    truth: Path | None = None
    match_distance_m: float = 3.0
    snippet_rows: int = 128
    snippet_cols: int = 192


@dataclass
class Look:
    """One pass over a contact: its best detection and the snippet around it."""

    sighting: Sighting
    detection: Detection
    png: bytes = b""


@dataclass
class ReportResult:
    page: Path
    contacts: int
    looks: int
    summary: dict[str, str]

    def text(self) -> str:
        return "\n".join([f"wrote {self.page}: {self.contacts} contact(s), {self.looks} look snippet(s)",
                          *(f"  {k}: {v}" for k, v in self.summary.items())])


def _looks(tracker: ContactTracker, found: FoundDetections) -> dict[str, list[Look]]:
    """Fuse every detection; per contact, the best detection of each look (sightings further apart
    than the look gap are different looks)."""
    seen: dict[str, list[tuple[Sighting, Detection]]] = {}
    for array_stamp, detections, width in found.arrays:
        for det in detections:
            if (fused := tracker.add_detection(det, array_stamp, width)) is not None:
                sighting, contact = fused
                seen.setdefault(contact.id, []).append((sighting, det))
    gap = tracker.manager.settings.look_gap_s * 1e9
    looks: dict[str, list[Look]] = {}
    for cid, pairs in seen.items():
        pairs.sort(key=lambda p: p[0].stamp_ns)
        runs: list[list[tuple[Sighting, Detection]]] = []
        for pair in pairs:
            if runs and pair[0].stamp_ns - runs[-1][-1][0].stamp_ns <= gap:
                runs[-1].append(pair)
            else:
                runs.append([pair])
        looks[cid] = [Look(*max(run, key=lambda p: p[1].score)) for run in runs]
    return looks


def _snippet(rows: np.ndarray, det: Detection, centre: int, cols: int) -> bytes:
    """A PNG of ``rows`` (the pings around ``centre``) cropped to ``cols`` around the box, box drawn."""
    r0, c0, r1, c1 = det.box
    half_h = (r1 - r0) / 2.0
    width = rows.shape[1]
    mid = (c0 + c1) / 2.0
    left = int(min(max(mid - cols / 2, 0), max(width - cols, 0)))
    crop = np.ascontiguousarray(rows[:, left:left + cols])
    image = to_display(crop)
    b, g, r = (int(255 * v) for v in reversed(class_rgb(det.class_name)))
    top = int(round(centre - half_h))
    cv2.rectangle(image, (int(c0) - left, top), (int(math.ceil(c1)) - left - 1, int(round(centre + half_h)) - 1),
                  (b, g, r), 1)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise UserError("could not encode a snippet")
    return encoded.tobytes()


def _cut_snippets(recording: Recording, looks: Sequence[Look], opts: ReportOptions) -> int:
    """Fill every look's snippet from one streamed pass over the recording; returns the pings (a
    frames recording: the frames) it holds."""
    half = opts.snippet_rows // 2
    wanted: dict[int, list[Look]] = {}
    for look in looks:
        det = look.detection
        wanted.setdefault(det.stamp_ns if det.stamp_ns is not None else look.sighting.stamp_ns, []).append(look)
    ring: deque[np.ndarray] = deque(maxlen=opts.snippet_rows)
    due: list[tuple[int, int, Look]] = []  # (row index to cut at, centre row index, look)
    index = -1
    frames = 0
    for block in recording.waterfall(ReadStats()):
        stamp = stamp_ns(block.header)
        if recording.mode == "frames":
            frames += 1
            for look in wanted.pop(stamp, []):
                look.png = _snippet(block.pixels, look.detection, int(round(sum(look.detection.box[::2]) / 2)),
                                    opts.snippet_cols)
            continue
        for row in block.pixels:
            index += 1
            if ring and ring[-1].shape != row.shape:
                ring.clear()
            ring.append(row)
            due += [(index + half - 1, index, look) for look in wanted.pop(stamp, [])]
            for item in [d for d in due if d[0] <= index]:
                due.remove(item)
                _cut(ring, index, item[1], item[2], opts)
    for _at, centre, look in due:  # the recording ended within half a snippet of them
        _cut(ring, index, centre, look, opts)
    return frames if recording.mode == "frames" else index + 1


def _cut(ring: deque[np.ndarray], last: int, centre: int, look: Look, opts: ReportOptions) -> None:
    rows = np.stack(list(ring))
    first = last - len(ring) + 1
    look.png = _snippet(rows, look.detection, centre - first, opts.snippet_cols)


def _lines(track: NavigationTrack, stamps: Sequence[int]) -> int:
    """Survey lines: runs of stamps whose heading stays within 45 degrees of the run's first."""
    lines, start = 0, None
    for t in stamps:
        pose = track.pose_at(t)
        if pose is None:
            continue
        if start is None or abs((pose.heading_deg - start + 180.0) % 360.0 - 180.0) > 45.0:
            lines, start = lines + 1, pose.heading_deg
    return lines


def _truth_scores(contacts: Sequence[Contact], truth: Sequence[tuple[float, float, dict[str, object]]],
                  gate_m: float) -> tuple[dict[str, tuple[int, int]], int]:
    """Per true class (found, total), and the contacts near no true object."""
    per: dict[str, list[int]] = {}
    near_any = set()
    for lat, lon, props in truth:
        name = str(props.get("class", "object"))
        hit = False
        for c in contacts:
            if WGS84.inv(lon, lat, c.longitude, c.latitude)[2] <= gate_m:
                hit = True
                near_any.add(c.id)
        per.setdefault(name, [0, 0])
        per[name][0] += int(hit)
        per[name][1] += 1
    return {k: (v[0], v[1]) for k, v in per.items()}, sum(c.id not in near_any for c in contacts)


def _map_svg(track: Sequence[tuple[float, float]], contacts: Sequence[Contact],
             truth: Sequence[tuple[float, float, dict[str, object]]]) -> str:
    """An inline SVG in metres east / north of the first fix (north up)."""
    lat0, lon0 = track[0]

    def east_north(lat: float, lon: float) -> tuple[float, float]:
        az, _back, dist = WGS84.inv(lon0, lat0, lon, lat)
        return dist * math.sin(math.radians(az)), dist * math.cos(math.radians(az))

    step = max(1, len(track) // 1500)
    pts = [east_north(lat, lon) for lat, lon in track[::step]]
    cs = [(c, *east_north(c.latitude, c.longitude)) for c in contacts]
    ts = [east_north(lat, lon) for lat, lon, _p in truth]
    xs = [p[0] for p in pts] + [c[1] for c in cs] + [t[0] for t in ts]
    ys = [p[1] for p in pts] + [c[2] for c in cs] + [t[1] for t in ts]
    pad = 10.0
    x0, x1, y0, y1 = min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad
    size = max(x1 - x0, y1 - y0)
    body = [f'<polyline fill="none" stroke="#9e9e9e" stroke-width="{size / 400:.3f}" points="'
            + " ".join(f"{x:.2f},{-y:.2f}" for x, y in pts) + '"/>']
    body += [f'<circle cx="{x:.2f}" cy="{-y:.2f}" r="{size / 90:.3f}" fill="none" stroke="#000" '
             f'stroke-width="{size / 500:.3f}"><title>true {html.escape(str(p.get("class", "")))}</title></circle>'
             for (x, y), (_la, _lo, p) in zip(ts, truth)]
    body += [f'<circle cx="{x:.2f}" cy="{-y:.2f}" r="{size / 160:.3f}" fill="{hex_colour(class_rgb(c.class_name))}">'
             f'<title>{html.escape(c.class_name)} {html.escape(c.id[:8])} ({c.confidence:.2f})</title></circle>'
             for c, x, y in cs]
    return (f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="{x0:.2f} {-y1:.2f} {x1 - x0:.2f} {y1 - y0:.2f}" '
            f'width="640" height="{640 * (y1 - y0) / max(x1 - x0, 1e-6):.0f}">' + "".join(body) + "</svg>")


STYLE = """
body{font-family:sans-serif;margin:1.5em;background:#fafafa;color:#222}
table.summary td{padding:2px 10px} .card{background:#fff;border:1px solid #ccc;border-radius:6px;margin:10px 0;padding:10px}
.card h3{margin:0 0 6px 0} .looks{display:flex;flex-wrap:wrap;gap:8px} figure{margin:0}
figcaption{font-size:80%;color:#555;max-width:300px} .looks img{width:288px;image-rendering:pixelated} .card table td{padding:1px 8px;font-size:90%}
.card.accept{border-color:#2e7d32;border-width:3px} .card.reject{opacity:.55}
"""

SCRIPT = """
const cards = () => Array.from(document.querySelectorAll('.card'));
function sortCards(key) {
  const box = document.getElementById('cards');
  const by = {confidence: (a, b) => b.dataset.confidence - a.dataset.confidence,
              class: (a, b) => a.dataset.class.localeCompare(b.dataset.class) || b.dataset.confidence - a.dataset.confidence,
              first: (a, b) => a.dataset.first - b.dataset.first}[key];
  cards().sort(by).forEach(c => box.appendChild(c));
}
function decide(input) {
  const card = input.closest('.card');
  card.classList.remove('accept', 'reject');
  card.classList.add(input.value);
}
function reviewed() {
  return cards().map(c => {
    const chosen = c.querySelector('input[type=radio]:checked');
    return {id: c.dataset.id, class: c.dataset.class, confidence: Number(c.dataset.confidence),
            looks: Number(c.dataset.looks), latitude: Number(c.dataset.lat), longitude: Number(c.dataset.lon),
            decision: chosen ? chosen.value : 'unreviewed'};
  });
}
function quote(v) { const s = String(v); return /[",\\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
function reviewExport(kind) {
  const rows = reviewed();
  if (kind === 'csv') {
    const head = ['id', 'class', 'confidence', 'looks', 'latitude', 'longitude', 'decision'];
    return [head.join(',')].concat(rows.map(r => head.map(k => quote(r[k])).join(','))).join('\\n') + '\\n';
  }
  return JSON.stringify({type: 'FeatureCollection', features: rows.map(r => ({type: 'Feature',
    geometry: {type: 'Point', coordinates: [r.longitude, r.latitude]},
    properties: {id: r.id, class: r.class, confidence: r.confidence, looks: r.looks, decision: r.decision}}))}, null, 1);
}
function download(kind) {
  const blob = new Blob([reviewExport(kind)], {type: kind === 'csv' ? 'text/csv' : 'application/geo+json'});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'reviewed_contacts.' + (kind === 'csv' ? 'csv' : 'geojson');
  document.body.appendChild(a);
  a.click();
  a.remove();
}
window.reviewExport = reviewExport;
document.getElementById('sort').addEventListener('change', e => sortCards(e.target.value));
document.querySelectorAll('input[type=radio]').forEach(i => i.addEventListener('change', () => decide(i)));
document.getElementById('export-csv').addEventListener('click', () => download('csv'));
document.getElementById('export-geojson').addEventListener('click', () => download('geojson'));
sortCards('confidence');
"""


def _card(c: Contact, looks: Sequence[Look]) -> str:
    e = html.escape
    figures = "".join(
        f'<figure><img alt="look {k + 1}" src="data:image/png;base64,{base64.b64encode(look.png).decode()}">'
        f"<figcaption>look {k + 1}: {e(iso_time(look.sighting.stamp_ns))}, {e(look.detection.class_name)} "
        f"{look.detection.score:.2f}"
        + ("" if look.sighting.heading_deg is None else f", heading {look.sighting.heading_deg:.0f}°")
        + "</figcaption></figure>" for k, look in enumerate(looks) if look.png)
    rows = [("class", e(c.class_name)), ("confidence", f"{c.confidence:.3f}"), ("latitude", f"{c.latitude:.7f}"),
            ("longitude", f"{c.longitude:.7f}"), ("uncertainty", f"{c.uncertainty_m:.2f} m"), ("looks", str(c.looks)),
            ("headings", str(c.headings)), ("first seen", e(iso_time(c.first_seen_ns))),
            ("last seen", e(iso_time(c.last_seen_ns))), ("id", e(c.id))]
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    name = e(f"d-{c.id}")
    return (f'<div class="card" data-id="{e(c.id)}" data-class="{e(c.class_name)}" data-confidence="{c.confidence:.6f}" '
            f'data-looks="{c.looks}" data-lat="{c.latitude:.9f}" data-lon="{c.longitude:.9f}" data-first="{c.first_seen_ns}">'
            f"<h3>{e(c.class_name)} <small>{e(c.id[:8])}</small></h3><div class=\"looks\">{figures}</div>"
            f"<table>{table}</table>"
            f'<label><input type="radio" name="{name}" value="accept"> accept</label> '
            f'<label><input type="radio" name="{name}" value="reject"> reject</label></div>')


def report(bag: Path | str, out_dir: Path | str, model: Path | str | None = None,
           options: ReportOptions | None = None) -> ReportResult:
    """Write ``out_dir/report.html`` (and ``contacts.geojson``) for ``bag`` (see the module docstring)."""
    opts = options or ReportOptions()
    bag, out_dir = Path(bag), Path(out_dir)
    recording = open_recording(bag, opts.recording)
    track, _nav_stats = navigation_from_bag(bag, opts.contact_options)
    fixes = track.fixes()
    if not fixes:
        raise UserError(f"{bag}: no navigation fix: a contact report needs positions")
    width = waterfall_width(recording)
    if model is not None:
        found = model_detections(recording, Path(model), opts.detector, ReadStats())
    else:
        found = recorded_detections(opts.detections_bag or bag, opts.detections_topic, width, opts.recording.distro)
    tracker = ContactTracker(track, opts.contact_options.settings, opts.contact_options.mounting, recording.geometry)
    looks = _looks(tracker, found)
    contacts = sorted(tracker.contacts, key=lambda c: -c.confidence)
    seen = _cut_snippets(recording, [look for ls in looks.values() for look in ls], opts)

    length = sum(WGS84.inv(a[1], a[0], b[1], b[0])[2] for a, b in zip(fixes, fixes[1:]))
    geometry = recording.geometry
    swath = 2 * ground_range_m(geometry.slant_range_m(0.5, width), geometry.altitude_m) if geometry and width else 0.0
    area_km2 = length * swath / 1e6
    by_class = Counter(c.class_name for c in contacts)
    fix_stamps = [t for t, _lat, _lon in track.fix_samples()]
    summary = {"recording": bag.name, "pings" if recording.mode == "pings" else "frames": str(seen),
               "survey lines": str(_lines(track, fix_stamps[:: max(1, len(fix_stamps) // 5000)])),
               "track length": f"{length:.0f} m", "swath": f"{swath:.1f} m",
               "swept area": f"{area_km2:.4f} km² (track length × swath)",
               "contacts": ", ".join(f"{k} {v}" for k, v in sorted(by_class.items())) or "none",
               "detections": f"{tracker.sightings} located of {tracker.detections}"}
    truth = read_geojson_points(opts.truth) if opts.truth else []
    if truth:
        per_class, false = _truth_scores(contacts, truth, opts.match_distance_m)
        for name, (hit, total) in sorted(per_class.items()):
            summary[f"Pd {name}"] = f"{hit / total:.2f} ({hit} of {total} within {opts.match_distance_m:g} m)"
        summary["false contacts"] = f"{false}" + (f" ({false / area_km2:.0f} per km²)" if area_km2 > 0 else "")
    e = html.escape
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Contact report: {e(bag.name)}</title><style>{STYLE}</style></head><body>"
            f"<h1>Contact report: {e(bag.name)}</h1>"
            "<table class=\"summary\">" + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in summary.items())
            + "</table><h2>Map</h2>" + _map_svg(fixes, contacts, truth)
            + "<h2>Contacts</h2><p>Sort by <select id=\"sort\"><option value=\"confidence\">confidence</option>"
            "<option value=\"class\">class</option><option value=\"first\">first seen</option></select> "
            "<button id=\"export-csv\">export reviewed CSV</button> "
            "<button id=\"export-geojson\">export reviewed GeoJSON</button></p><div id=\"cards\">"
            + "".join(_card(c, looks.get(c.id, [])) for c in contacts)
            + f"</div><script>{SCRIPT}</script></body></html>\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_text_atomic(out_dir / "report.html", page)
    write_contacts(contacts, out_dir / "contacts.geojson")
    return ReportResult(path, len(contacts), sum(1 for ls in looks.values() for look in ls if look.png), summary)
