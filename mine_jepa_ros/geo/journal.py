"""Contacts that survive a restart: the contact tracker's state journaled in one file.

:class:`ContactJournal` keeps every contact with its sightings (class, score, position, stamp,
heading) in a JSON file, ``{"format": "mine_jepa_ros/contacts-journal", "version": 1,
"contacts": [...]}``. Floats are written in Python's shortest round-trip form, so a reloaded
contact is bit-for-bit the one saved: its UUID, and its position, class, confidence and looks,
which :meth:`~mine_jepa_ros.geo.contacts.ContactManager.restore` recomputes from the sightings.

* :meth:`ContactJournal.save` writes the whole state beside the file, flushes it to the disk
  (``fsync``) and renames it onto the file, so a process killed at any moment leaves either the
  previous state or the new one, never half of one.
* :meth:`ContactJournal.restore` puts a saved state into a manager. A missing file is a first start
  (nothing to restore). A file that cannot be read back (corrupt, truncated, another program's) is
  kept, renamed to ``NAME.bad-<UTC time>``, and the manager starts empty; the returned warning says
  so in one line. It never raises for the file's content.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mine_jepa_ros.atomic import write_text_atomic
from mine_jepa_ros.geo.contacts import Contact, ContactManager, Sighting

FORMAT = "mine_jepa_ros/contacts-journal"
VERSION = 1


class JournalFormatError(ValueError):
    """The journal's content is not a contacts journal this version can read."""


def _sighting_record(s: Sighting) -> list[Any]:
    return [s.class_name, s.score, s.latitude, s.longitude, s.stamp_ns, s.heading_deg]


def _sighting(record: Any, where: str) -> Sighting:
    if not isinstance(record, list) or len(record) != 6:
        raise JournalFormatError(f"{where}: expected [class, score, latitude, longitude, stamp_ns, heading]")
    name, score, lat, lon, stamp, heading = record
    if not isinstance(name, str) or not name:
        raise JournalFormatError(f"{where}: class must be a non-empty string")
    numbers = (score, lat, lon) if heading is None else (score, lat, lon, heading)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise JournalFormatError(f"{where}: score, latitude, longitude and heading must be finite numbers")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise JournalFormatError(f"{where}: position {lat}, {lon} is not a latitude and longitude")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        raise JournalFormatError(f"{where}: stamp_ns must be an integer")
    return Sighting(name, float(score), float(lat), float(lon), stamp, None if heading is None else float(heading))


def journal_text(contacts: Sequence[Contact]) -> str:
    """The journal's content for ``contacts``."""
    return json.dumps({"format": FORMAT, "version": VERSION,
                       "contacts": [{"id": c.id, "sightings": [_sighting_record(s) for s in c.sightings]}
                                    for c in contacts]}, separators=(",", ":")) + "\n"


def parse_journal(text: str) -> list[tuple[str, list[Sighting]]]:
    """``(contact id, sightings)`` per contact; raises :class:`JournalFormatError` naming what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise JournalFormatError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise JournalFormatError(f"not a contacts journal (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise JournalFormatError(f"journal version {data.get('version')!r}; this release reads version {VERSION}")
    contacts = data.get("contacts")
    if not isinstance(contacts, list):
        raise JournalFormatError("\"contacts\" must be a list")
    out: list[tuple[str, list[Sighting]]] = []
    seen: set[str] = set()
    for i, record in enumerate(contacts):
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not isinstance(record.get("sightings"), list):
            raise JournalFormatError(f"contacts[{i}]: expected {{\"id\": ..., \"sightings\": [...]}}")
        if record["id"] in seen or not record["sightings"]:
            raise JournalFormatError(f"contacts[{i}]: a repeated id or no sightings")
        seen.add(record["id"])
        out.append((record["id"], [_sighting(s, f"contacts[{i}].sightings[{j}]") for j, s in enumerate(record["sightings"])]))
    return out


class ContactJournal:
    """One journal file (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.saves = 0

    def save(self, contacts: Sequence[Contact]) -> None:
        """Replace the journal with ``contacts``, durably; raises OSError when the disk refuses."""
        write_text_atomic(self.path, journal_text(contacts), durable=True)
        self.saves += 1

    def restore(self, manager: ContactManager) -> str | None:
        """Load the journal into ``manager`` (replacing its contacts); returns a one-line warning when
        the file was unusable (it is then renamed aside and ``manager`` holds no contacts), else None."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            return self._set_aside(manager, f"cannot be read ({exc})")
        try:
            manager.restore(parse_journal(text))
        except JournalFormatError as exc:
            return self._set_aside(manager, str(exc))
        return None

    def _set_aside(self, manager: ContactManager, why: str) -> str:
        manager.restore([])
        aside = self.path.with_name(f"{self.path.name}.bad-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
        try:
            self.path.rename(aside)
            kept = f"kept as {aside}"
        except OSError as exc:
            kept = f"could not be renamed aside ({exc})"
        return f"contacts_file {self.path}: {why}; {kept}; starting with no contacts"
