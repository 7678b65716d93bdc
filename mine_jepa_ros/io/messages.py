"""Message types without ROS: ``rosbags`` typestores with vision_msgs 4.x registered.

``rosbags`` ships the standard ROS 2 message definitions but not ``vision_msgs``; the package keeps
the vision_msgs ``.msg`` files it uses in ``mine_jepa_ros/interfaces/vision_msgs/msg`` (the same
files build the real interface package for rclpy) and registers them here.

:class:`MessageFactory` is the duck-typed bridge between the two worlds: the conversion code asks
it for a message class by its full name (``"vision_msgs/msg/Detection2D"``) and builds every
message with all fields as keyword arguments, which both rclpy classes and rosbags dataclasses
accept.
"""

from __future__ import annotations

import array
import importlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

INTERFACES_DIR = Path(__file__).parents[1] / "interfaces"
VISION_MSGS_DIR = INTERFACES_DIR / "vision_msgs" / "msg"
INTERFACE_PACKAGES = ("vision_msgs", "marine_acoustic_msgs", "smarc_msgs", "geographic_msgs", "foxglove_msgs")  # bundled .msg files

DISTROS: dict[str, Stores] = {
    "humble": Stores.ROS2_HUMBLE,
    "jazzy": Stores.ROS2_JAZZY,
    "kilted": Stores.ROS2_KILTED,
}


def vision_msgs_definitions() -> dict[str, str]:
    """``{"vision_msgs/msg/Name": msg text}`` for every bundled vision_msgs definition."""
    return interface_definitions("vision_msgs")


def interface_definitions(package: str) -> dict[str, str]:
    """``{"package/msg/Name": msg text}`` for every bundled definition of ``package``."""
    folder = INTERFACES_DIR / package / "msg"
    return {f"{package}/msg/{p.stem}": p.read_text() for p in sorted(folder.glob("*.msg"))}


@cache
def typestore_for(distro: str = "jazzy") -> Typestore:
    """A rosbags typestore for ``distro`` (humble, jazzy, kilted) with the bundled interface packages
    (vision_msgs, and the sonar drivers' marine_acoustic_msgs and smarc_msgs) registered.

    Cached: a typestore is immutable once built and registering types takes milliseconds.
    """
    try:
        store = get_typestore(DISTROS[distro])
    except KeyError:
        raise ValueError(f"unknown ROS distro {distro!r}; expected one of {sorted(DISTROS)}") from None
    types: dict[str, Any] = {}
    for package in INTERFACE_PACKAGES:
        for name, text in interface_definitions(package).items():
            types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


@dataclass
class MessageFactory:
    """Builds messages either from a rosbags typestore or from importable rclpy message modules."""

    typestore: Typestore | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def for_rosbags(cls, distro: str = "jazzy") -> MessageFactory:
        return cls(typestore=typestore_for(distro))

    @classmethod
    def for_rclpy(cls) -> MessageFactory:
        return cls(typestore=None)

    @property
    def is_rosbags(self) -> bool:
        return self.typestore is not None

    def cls(self, name: str) -> Any:
        """The message class for ``pkg/msg/Name``."""
        if name not in self._cache:
            if self.typestore is not None:
                self._cache[name] = self.typestore.types[name]
            else:
                pkg, _, type_name = name.split("/")
                self._cache[name] = getattr(importlib.import_module(f"{pkg}.msg"), type_name)
        return self._cache[name]

    def make(self, name: str, **fields: Any) -> Any:
        return self.cls(name)(**fields)

    def byte_array(self, data: np.ndarray | bytes) -> Any:
        """A ``uint8[]`` field value: numpy for rosbags, ``array('B')`` for rclpy (no per-byte check)."""
        if self.is_rosbags:
            return np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), dtype=np.uint8)
        return array.array("B", data.tobytes() if isinstance(data, np.ndarray) else data)

    def time(self, stamp_ns: int) -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return self.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        return self.make("std_msgs/msg/Header", stamp=self.time(stamp_ns), frame_id=frame_id)


def stamp_ns(header: Any) -> int:
    """Nanoseconds of a message header's stamp (works for rclpy and rosbags messages)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
