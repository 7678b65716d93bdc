"""What the node does with sonar-driver and navigation messages, without ROS (tested offline).

* :func:`driver_diagnostics`: what the driver-message assembler
  (:class:`~mine_jepa_ros.io.sonar_drivers.DriverAssembler`, shared with the offline input layer)
  skipped, as a diagnostics value.
* :class:`NavigationFusion` keeps the navigation track (fixes, headings, altitudes as they arrive)
  and the contact tracker; the subscription callbacks add navigation, the inference worker adds
  detections. Both sides take one lock, so the node's executor thread and its worker can share it.
  Its :meth:`~NavigationFusion.diagnostics` say whether positions are available.
  With a :class:`~mine_jepa_ros.geo.journal.ContactJournal` (the ``contacts_file`` parameter) the
  contacts are restored from it at construction and saved to it on every change; a failed save is
  counted and reported (``journal_error``), never raised: the node keeps detecting.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from mine_jepa_ros.geo.tracking import ContactTracker, add_nav_sample
from mine_jepa_ros.errors import InputError
from mine_jepa_ros.geo.contacts import Contact, ContactSettings
from mine_jepa_ros.geo.journal import ContactJournal
from mine_jepa_ros.geo.navigation import NavigationTrack, SensorMounting
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.sonar_drivers import DriverAssembler


def _counts(counter: Counter[str]) -> str:
    """``reason: n, ...`` in reason order, or ``0``: a diagnostics value."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "0"


def driver_diagnostics(assembler: DriverAssembler) -> dict[str, str]:
    """The node's ``driver messages skipped`` diagnostics value."""
    return {"driver messages skipped": _counts(assembler.skipped())}


class NavigationFusion:
    """Navigation in, detections in, contacts out; thread-safe."""

    def __init__(self, settings: ContactSettings, mounting: SensorMounting, geometry: SonarGeometry | None,
                 max_gap_s: float = 2.0, journal: ContactJournal | None = None) -> None:
        self._lock = threading.Lock()
        self.tracker = ContactTracker(NavigationTrack(max_gap_s=max_gap_s), settings, mounting, geometry)
        self.nav_messages = 0
        self.nav_skipped: Counter[str] = Counter()
        self.journal = journal
        self.journal_failures = 0
        self.journal_error = ""
        self.restore_warning = journal.restore(self.tracker.manager) if journal is not None else None
        self.restored = len(self.tracker.contacts)

    def add_nav(self, msg: Any, msgtype: str) -> None:
        with self._lock:
            try:
                add_nav_sample(self.tracker.track, msg, msgtype)
                self.nav_messages += 1
            except InputError as exc:
                self.nav_skipped[exc.reason] += 1

    def add_detections(self, detections: Sequence[Detection], stamp_ns: int, width: int) -> list[Contact]:
        """Locate and fuse; returns the contacts that changed (empty when none)."""
        if not detections:
            return []
        with self._lock:
            changed = self.tracker.add(detections, stamp_ns, width)
            if changed and self.journal is not None:
                try:
                    self.journal.save(self.tracker.contacts)
                    self.journal_error = ""
                except OSError as exc:
                    self.journal_failures += 1
                    self.journal_error = f"contacts_file {self.journal.path}: not saved ({exc})"
            return changed

    def contacts(self) -> list[Contact]:
        with self._lock:
            return list(self.tracker.contacts)

    def track_fixes(self) -> list[tuple[float, float]]:
        """(latitude, longitude) of every fix so far."""
        with self._lock:
            return self.tracker.track.fixes()

    def diagnostics(self) -> dict[str, str]:
        with self._lock:
            t = self.tracker
            positions = "available" if len(t.track) else "unavailable (no navigation fix received yet)"
            return {"positions": positions, "navigation messages": str(self.nav_messages),
                    "navigation skipped": _counts(self.nav_skipped),
                    "detections located": f"{t.sightings} of {t.detections}",
                    "detections not located": _counts(t.skipped),
                    "contacts": str(len(t.contacts)),
                    **({} if self.journal is None else {
                        "contacts_file": str(self.journal.path), "contacts restored": str(self.restored),
                        "journal saves": str(self.journal.saves), "journal failures": str(self.journal_failures),
                        "journal error": self.journal_error or self.restore_warning or ""})}
