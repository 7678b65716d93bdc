"""The operating point a checkpoint carries: temperature and per-class thresholds chosen on data.

``mine-jepa calibrate`` fits a temperature on validation surveys' windows and picks per-class
thresholds for a target (a false-alarm rate per km², a Pd, the best F1 or the best F-beta); the result goes into
the checkpoint's metadata (``operating_point``). The classifier divides logits by the temperature
before the softmax; the node and ``replay`` use the thresholds when none are given (an empty
``thresholds`` parameter, no ``--thresholds``) and report them in ``LabelInfo.threshold``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mine_jepa_ros.detect.merging import Thresholds
from mine_jepa_ros.errors import CheckpointError, UserError

TARGETS = ("fa_per_km2", "pd", "f1", "fbeta")


@dataclass(frozen=True)
class OperatingPoint:
    temperature: float
    thresholds: dict[str, float]  # non-background class name -> probability threshold
    target: dict[str, Any] = field(default_factory=dict)  # {"kind": one of TARGETS, "value": ...}
    validation: dict[str, Any] = field(default_factory=dict)  # what was measured where it was chosen

    def check(self, class_names: Sequence[str], where: str) -> None:
        problems = []
        if not self.temperature > 0:
            problems.append(f"temperature {self.temperature} must be > 0")
        if sorted(self.thresholds) != sorted(class_names[1:]):
            problems.append(f"thresholds for {sorted(self.thresholds)}, classes are {list(class_names[1:])}")
        if any(not 0.0 <= float(t) <= 1.0 for t in self.thresholds.values()):
            problems.append(f"thresholds {self.thresholds} must be within [0, 1]")
        if problems:
            raise CheckpointError(f"{where}: invalid operating point: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> OperatingPoint:
        try:
            return cls(temperature=float(data["temperature"]), thresholds={str(k): float(v) for k, v in data["thresholds"].items()},
                       target=dict(data.get("target", {})), validation=dict(data.get("validation", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{where}: invalid operating point ({exc!r})") from exc


def thresholds_in_force(class_names: Sequence[str],
                        requested: Thresholds | float | Sequence[float] | Mapping[str, float] | None,
                        operating_point: OperatingPoint | None, model_name: str) -> Thresholds:
    """``requested`` when given (not None, not empty), else the checkpoint's operating point; a
    checkpoint without one is an error that says what to do."""
    if requested is not None and not (isinstance(requested, Sequence | Mapping) and len(requested) == 0):
        return Thresholds.of(class_names, requested)
    if operating_point is None:
        raise UserError(f"{model_name}: no operating point in this checkpoint; choose one on validation surveys "
                        "with `mine-jepa calibrate`, or give thresholds")
    return Thresholds.of(class_names, operating_point.thresholds)
