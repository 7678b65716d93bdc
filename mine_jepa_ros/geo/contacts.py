"""Contacts: georeferenced detections fused into one record per object on the seabed.

:class:`ContactManager` takes :class:`Sighting` records (a detection already located on the Earth)
and keeps :class:`Contact` records. A sighting joins the nearest contact within ``gate_m``
(geodesic distance on WGS84) whose class is compatible (``same_class_only``: equal class; else any
object class, so that a MILCO seen as a NOMBO from the other side still adds to one contact and
the class is decided by vote); else it starts a new contact.

A contact holds:

* a stable id: a UUID derived from its first sighting (the same input gives the same ids);
* its class: the score-weighted vote of its sightings;
* looks: sightings more than ``look_gap_s`` apart in time are different looks (a new pass over
  the object, e.g. a revisit from the other side); ``headings``: the distinct vehicle headings it
  was seen from (binned to ``heading_bin_deg``);
* confidence: ``1 - prod(1 - best score of each look)`` (independent looks reinforce each other);
* position: the score-weighted mean of its sightings, and an uncertainty in metres: the RMS of
  ``sigma_m / sqrt(n)`` and the sightings' own spread around that mean;
* first and last seen (stamps).

Every method that changes contacts returns the contacts it changed, so a ROS node can republish
only when something changed.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

import numpy as np

from mine_jepa_ros.geo.navigation import WGS84

CONTACT_NAMESPACE = uuid.UUID("5b0d6a52-8f0e-4f55-9d4a-6d1f0c1a7e01")


@dataclass(frozen=True)
class Sighting:
    """One detection located on the Earth."""

    class_name: str
    score: float
    latitude: float
    longitude: float
    stamp_ns: int
    heading_deg: float | None = None  # the vehicle's heading when it saw the object


@dataclass
class Contact:
    id: str
    sightings: list[Sighting] = field(default_factory=list)
    latitude: float = 0.0
    longitude: float = 0.0
    uncertainty_m: float = 0.0
    class_name: str = ""
    confidence: float = 0.0
    looks: int = 0
    headings: int = 0
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    class_votes: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "class": self.class_name, "confidence": round(self.confidence, 4), "looks": self.looks,
                "headings": self.headings, "latitude": self.latitude, "longitude": self.longitude,
                "uncertainty_m": round(self.uncertainty_m, 3), "first_seen_ns": self.first_seen_ns,
                "last_seen_ns": self.last_seen_ns, "sightings": len(self.sightings),
                "class_votes": {k: round(v, 4) for k, v in self.class_votes.items()}}


@dataclass(frozen=True)
class ContactSettings:
    gate_m: float = 3.0  # a sighting further than this from every contact starts a new one
    same_class_only: bool = False  # True: only sightings of the same class fuse
    look_gap_s: float = 10.0  # sightings further apart in time are different looks
    heading_bin_deg: float = 45.0  # headings closer than this count as one
    sigma_m: float = 1.0  # one sighting's position uncertainty (navigation + range resolution)


class ContactManager:
    def __init__(self, settings: ContactSettings | None = None) -> None:
        self.settings = settings or ContactSettings()
        self.contacts: list[Contact] = []

    def add(self, sighting: Sighting) -> Contact:
        """Fuse one sighting; returns the contact it joined or started."""
        contact = self._nearest(sighting)
        if contact is None:
            key = f"{sighting.stamp_ns}:{sighting.latitude:.8f}:{sighting.longitude:.8f}:{sighting.class_name}"
            contact = Contact(id=str(uuid.uuid5(CONTACT_NAMESPACE, key)))
            self.contacts.append(contact)
        contact.sightings.append(sighting)
        self._update(contact)
        return contact

    def restore(self, saved: list[tuple[str, list[Sighting]]]) -> None:
        """Replace the contacts with saved ones (id and sightings each, in their order); everything
        else about them is recomputed from the sightings, as :meth:`add` computed it."""
        self.contacts = []
        for contact_id, sightings in saved:
            contact = Contact(id=contact_id, sightings=list(sightings))
            self._update(contact)
            self.contacts.append(contact)

    def add_all(self, sightings: list[Sighting]) -> list[Contact]:
        """Fuse several; returns the contacts that changed (each once, in order of first change)."""
        changed: dict[str, Contact] = {}
        for s in sightings:
            c = self.add(s)
            changed.setdefault(c.id, c)
        return list(changed.values())

    def _nearest(self, s: Sighting) -> Contact | None:
        candidates = [c for c in self.contacts if not self.settings.same_class_only or c.class_name == s.class_name]
        if not candidates:
            return None
        lats = np.array([c.latitude for c in candidates])
        lons = np.array([c.longitude for c in candidates])
        _az, _back, dist = WGS84.inv(np.full(len(lons), s.longitude), np.full(len(lats), s.latitude), lons, lats)
        k = int(np.argmin(dist))
        return candidates[k] if float(dist[k]) <= self.settings.gate_m else None

    def _update(self, c: Contact) -> None:
        st = self.settings
        sightings = c.sightings
        weights = np.array([max(s.score, 1e-6) for s in sightings])
        lats = np.array([s.latitude for s in sightings])
        lons = np.array([s.longitude for s in sightings])
        c.latitude = float(np.average(lats, weights=weights))
        c.longitude = float(np.average(lons, weights=weights))
        _az, _back, dist = WGS84.inv(np.full(len(lons), c.longitude), np.full(len(lats), c.latitude), lons, lats)
        spread = float(np.sqrt(np.average(np.square(dist), weights=weights)))
        c.uncertainty_m = math.hypot(st.sigma_m / math.sqrt(len(sightings)), spread)
        votes: dict[str, float] = {}
        for s in sightings:
            votes[s.class_name] = votes.get(s.class_name, 0.0) + s.score
        c.class_votes = votes
        c.class_name = max(votes, key=lambda k: (votes[k], k))
        stamps = sorted(s.stamp_ns for s in sightings)
        c.first_seen_ns, c.last_seen_ns = stamps[0], stamps[-1]
        # Looks: runs of sightings with no gap longer than look_gap_s between them.
        by_time = sorted(sightings, key=lambda s: s.stamp_ns)
        look_best: list[float] = []
        gap = st.look_gap_s * 1e9
        for prev, s in zip([None, *by_time[:-1]], by_time):
            if prev is None or s.stamp_ns - prev.stamp_ns > gap:
                look_best.append(s.score)
            else:
                look_best[-1] = max(look_best[-1], s.score)
        c.looks = len(look_best)
        c.confidence = float(1.0 - np.prod([1.0 - min(max(p, 0.0), 1.0) for p in look_best]))
        bins = {int(((s.heading_deg % 360.0) + st.heading_bin_deg / 2) // st.heading_bin_deg) % int(round(360 / st.heading_bin_deg))
                for s in sightings if s.heading_deg is not None}
        c.headings = len(bins)
