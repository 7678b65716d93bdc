"""Detections -> georeferenced sightings -> contacts, the same way online (node) and offline (bags).

:class:`ContactTracker` locates each detection with a :class:`~mine_jepa_ros.geo.navigation.Georeferencer`:

* when: the detection's own header stamp (the time of its centre ping), else its array's stamp;
* across track: the hypothesis pose's ``y`` when the producer filled it (signed ground range,
  REP-103: port positive; the simulator's ground truth holds the object's own), re-projected from
  the geometry's altitude to the navigation's altitude at that stamp when both are known; else the
  box centre's column through the sonar geometry (slant range -> ground range with the altitude
  from navigation at that stamp, else the geometry's altitude);

and fuses the sightings in a :class:`~mine_jepa_ros.geo.contacts.ContactManager`. A detection that
cannot be located (a navigation gap, no geometry) is skipped and counted by reason.

:func:`contacts_from_bag` reads a bag's navigation topics into a track first (bad navigation
messages skipped and counted), then every ``Detection2DArray`` of the detections topic.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mine_jepa_ros.errors import InputError, UserError
from mine_jepa_ros.geo.contacts import CONTACT_NAMESPACE, Contact, ContactManager, ContactSettings, Sighting
from mine_jepa_ros.geo.formats import contact_properties
from mine_jepa_ros.geo.journal import ContactJournal
from mine_jepa_ros.geo.navigation import WGS84, Georeferencer, NavigationTrack, SensorMounting
from mine_jepa_ros.geometry import SonarGeometry, ground_range_m
from mine_jepa_ros.io.bag import ReadStats
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.navigation import nav_sample
from mine_jepa_ros.io.plots import pyplot, save_figure
from mine_jepa_ros.io.recording import detection_arrays, navigation_messages, sonar_setup


def add_nav_sample(track: NavigationTrack, msg: object, msgtype: str) -> None:
    """Put one navigation message into ``track``; raises InputError (naming the field) for a bad one."""
    sample = nav_sample(msg, msgtype)
    if sample.kind == "fix":
        track.add_fix(sample.stamp_ns, *sample.values)
    elif sample.kind == "heading":
        track.add_heading(sample.stamp_ns, sample.values[0])
    else:
        track.add_altitude(sample.stamp_ns, sample.values[0])


class ContactTracker:
    """Georeferences detections and fuses them into contacts (see the module docstring)."""

    def __init__(self, track: NavigationTrack, settings: ContactSettings | None = None,
                 mounting: SensorMounting | None = None, geometry: SonarGeometry | None = None) -> None:
        self.track = track
        self.georeferencer = Georeferencer(track, mounting)
        self.manager = ContactManager(settings)
        self.geometry = geometry
        self.detections = 0
        self.sightings = 0
        self.skipped: Counter[str] = Counter()

    @property
    def contacts(self) -> list[Contact]:
        return self.manager.contacts

    def sighting(self, det: Detection, array_stamp_ns: int, width: int) -> Sighting | None:
        """The detection located on the Earth, or None (counted in ``skipped``)."""
        stamp = det.stamp_ns if det.stamp_ns is not None else array_stamp_ns
        geometry = self.geometry
        if det.position_m is None and (geometry is None or width <= 0):
            self.skipped["no cross-track position (no pose, no sonar geometry)"] += 1
            return None
        pose = self.track.pose_at(stamp)
        if pose is None:
            self.skipped["no navigation at its stamp"] += 1
            return None
        if det.position_m is not None:
            y = det.position_m[1]
            if geometry is not None and pose.altitude_m is not None and y != 0.0:
                # the producer's ground range assumed the geometry's altitude: re-project with this ping's own
                y = ground_range_m(math.copysign(math.hypot(y, geometry.altitude_m), y), pose.altitude_m)
        else:
            assert geometry is not None
            altitude = pose.altitude_m if pose.altitude_m is not None else geometry.altitude_m
            y = ground_range_m(geometry.slant_range_m(det.centre[1], width), altitude)
        point = self.georeferencer.place(pose, y)
        return Sighting(det.class_name, det.score, point.latitude, point.longitude, stamp, pose.heading_deg)

    def add_detection(self, det: Detection, array_stamp_ns: int, width: int = 0) -> tuple[Sighting, Contact] | None:
        """Locate and fuse one detection: its sighting and the contact it joined or started (None
        when it could not be located, counted in ``skipped``)."""
        self.detections += 1
        s = self.sighting(det, array_stamp_ns, width)
        if s is None:
            return None
        self.sightings += 1
        return s, self.manager.add(s)

    def add(self, detections: Sequence[Detection], array_stamp_ns: int, width: int = 0) -> list[Contact]:
        """Locate and fuse detections; returns the contacts that changed (each once, in order of first change)."""
        changed: dict[str, Contact] = {}
        for det in detections:
            if (fused := self.add_detection(det, array_stamp_ns, width)) is not None:
                changed.setdefault(fused[1].id, fused[1])
        return list(changed.values())

    def result(self, nav_stats: ReadStats, journal: ContactJournal | None = None,
               journal_warning: str | None = None) -> ContactsResult:
        """What this tracker made of its detections, with the navigation that was read for it; with a
        journal, the contacts are saved to it first."""
        if journal is not None:
            journal.save(self.contacts)
        return ContactsResult(self.contacts, self.detections, self.sightings, self.skipped, nav_stats.read,
                              nav_stats.reasons, self.track.fixes(), [journal_warning] if journal_warning else [])


@dataclass
class ContactsResult:
    contacts: list[Contact]
    detections: int
    sightings: int
    skipped: Counter[str]
    nav_messages: int
    nav_skipped: Counter[str] = field(default_factory=Counter)
    track: list[tuple[float, float]] = field(default_factory=list)  # (latitude, longitude) of every fix
    notes: list[str] = field(default_factory=list)  # e.g. a contacts journal that could not be restored

    def summary(self) -> str:
        by_class = Counter(c.class_name for c in self.contacts)
        lines = [f"{len(self.contacts)} contact(s) ({', '.join(f'{k} {v}' for k, v in sorted(by_class.items())) or 'none'}) "
                 f"from {self.sightings} of {self.detections} detection(s); {self.nav_messages} navigation message(s)"]
        if self.skipped:
            lines.append("detections not located: " + ", ".join(f"{k}: {v}" for k, v in self.skipped.items()))
        if self.nav_skipped:
            lines.append("navigation messages skipped: " + ", ".join(f"{k}: {v}" for k, v in self.nav_skipped.items()))
        return "\n".join([*lines, *(f"warning: {n}" for n in self.notes)])


@dataclass(frozen=True)
class ContactOptions:
    detections_topic: str | None = None  # None: the bag's only Detection2DArray topic
    nav_topics: tuple[str, ...] = ()  # () : every navigation topic of the bag (by type)
    settings: ContactSettings = field(default_factory=ContactSettings)
    mounting: SensorMounting = field(default_factory=SensorMounting)
    max_gap_s: float = 2.0
    hold_s: float = 0.5
    distro: str = "jazzy"
    state: Path | None = None  # a contacts journal (geo.journal): restored before, saved after


def navigation_from_bag(bag: Path | str, opts: ContactOptions) -> tuple[NavigationTrack, ReadStats]:
    """Every navigation message of the bag (``opts.nav_topics``, else all by type) in a track; bad ones
    are skipped and counted in the returned stats."""
    track = NavigationTrack(max_gap_s=opts.max_gap_s, hold_s=opts.hold_s)
    stats = ReadStats()
    for topic, msgtype, index, msg in navigation_messages(bag, opts.nav_topics, stats, opts.distro):
        try:
            add_nav_sample(track, msg, msgtype)
            stats.read += 1
        except InputError as exc:
            stats.skip(exc.reason, f"{topic}[{index}]: {exc}")
    return track, stats


def contacts_from_bag(bag: Path | str, opts: ContactOptions | None = None) -> ContactsResult:
    """Georeference and fuse one ``Detection2DArray`` topic of ``bag`` with the bag's navigation."""
    opts = opts or ContactOptions()
    arrays = detection_arrays(bag, opts.detections_topic, ReadStats(), opts.distro)
    track, nav_stats = navigation_from_bag(bag, opts)
    # the along-track spacing plays no part in locating a detection: 1 m stands in where the info has none
    info, geometry = sonar_setup(bag, distro=opts.distro, fallback_ping_spacing_m=1.0)
    width = 2 * int(info.get("samples_per_side") or 0)
    tracker = ContactTracker(track, opts.settings, opts.mounting, geometry)
    journal, warning = restore_state(tracker, opts.state)
    for stamp, detections in arrays:
        tracker.add(detections, stamp, width)
    return tracker.result(nav_stats, journal, warning)


def restore_state(tracker: ContactTracker, state: Path | None) -> tuple[ContactJournal | None, str | None]:
    """The journal of ``state`` (None without one) restored into ``tracker``, and its warning."""
    if state is None:
        return None, None
    journal = ContactJournal(state)
    return journal, journal.restore(tracker.manager)


def plot_contacts(result: ContactsResult, path: Path, truth: Sequence[tuple[float, float, dict[str, object]]] = (),
                  title: str = "") -> Path:
    """A map in metres east / north of the first fix: the vehicle track, the contacts (marker by class,
    labelled with their looks) and, when given, the true objects."""
    points = result.track or [(c.latitude, c.longitude) for c in result.contacts] or [(lat, lon) for lat, lon, _ in truth]
    if not points:
        raise UserError(f"{path}: nothing to draw (no fix, no contact, no truth)")
    lat0, lon0 = points[0]

    def east_north(lat: float, lon: float) -> tuple[float, float]:
        az, _back, dist = WGS84.inv(lon0, lat0, lon, lat)
        return dist * math.sin(math.radians(az)), dist * math.cos(math.radians(az))

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 7.0))
    if result.track:
        xy = [east_north(lat, lon) for lat, lon in result.track]
        ax.plot([p[0] for p in xy], [p[1] for p in xy], "-", color="0.6", lw=1, label="track (fixes)")
    if truth:
        xy = [east_north(lat, lon) for lat, lon, _p in truth]
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=160, facecolors="none", edgecolors="k", lw=1.2,
                   label="true objects")
    styles = {"MILCO": ("tab:red", "o"), "NOMBO": ("tab:blue", "s")}
    for name in sorted({c.class_name for c in result.contacts}):
        color, marker = styles.get(name, ("tab:green", "^"))
        mine = [c for c in result.contacts if c.class_name == name]
        xy = [east_north(c.latitude, c.longitude) for c in mine]
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], c=color, marker=marker, s=40, label=f"{name} contacts")
        for c, (x, y) in zip(mine, xy):
            ax.annotate(f"{c.looks} look{'s' if c.looks > 1 else ''}", (x, y), textcoords="offset points", xytext=(6, 6),
                        fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("east of the first fix (m)")
    ax.set_ylabel("north of the first fix (m)")
    ax.set_title(title or f"{len(result.contacts)} contacts")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def contacts_map_msg(factory: MessageFactory, contacts: Sequence[Contact], header: object) -> object:
    """A ``geographic_msgs/GeographicMap``: one ``WayPoint`` per contact (UUID id, ``GeoPoint``, props
    class, confidence, looks, headings, uncertainty_m, first_seen, last_seen), bounds around them."""
    def key_values(props: dict[str, object]) -> list[object]:
        return [factory.make("geographic_msgs/msg/KeyValue", key=k, value=str(v)) for k, v in props.items()]

    def uuid_msg(text: str) -> object:
        return factory.make("unique_identifier_msgs/msg/UUID", uuid=np.frombuffer(uuid.UUID(text).bytes, np.uint8).copy())

    def geo_point(lat: float, lon: float) -> object:
        return factory.make("geographic_msgs/msg/GeoPoint", latitude=float(lat), longitude=float(lon), altitude=math.nan)

    points = [factory.make("geographic_msgs/msg/WayPoint", id=uuid_msg(c.id), position=geo_point(c.latitude, c.longitude),
                           props=key_values({k: v for k, v in contact_properties(c).items() if k != "id"}))
              for c in contacts]
    lats = [c.latitude for c in contacts] or [math.nan]
    lons = [c.longitude for c in contacts] or [math.nan]
    bounds = factory.make("geographic_msgs/msg/BoundingBox", min_pt=geo_point(min(lats), min(lons)),
                          max_pt=geo_point(max(lats), max(lons)))
    return factory.make("geographic_msgs/msg/GeographicMap", header=header, id=uuid_msg(str(CONTACT_NAMESPACE)),
                        bounds=bounds, points=points, features=[], props=key_values({"contacts": len(contacts)}))
