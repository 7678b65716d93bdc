"""The node's parameters: one table, read by the node (declarations with descriptors), checked
against ``config/mine_jepa.yaml`` and ``launch/mine_jepa.launch.py`` by the tests, and turned into
validated :class:`NodeSettings` here without ROS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mine_jepa_ros.detector import thresholds_for
from mine_jepa_ros.pipeline import INPUT_MODES, PipelineConfig, SonarGeometry


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    read_only: bool = True
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "", "Checkpoint (.safetensors) written by `mine-jepa init-model` or `mine-jepa probe`."),
    ParamSpec("device", "auto", "Inference device: auto, cpu or cuda[:N]; CUDA absent -> CPU with one warning."),
    ParamSpec("precision", "auto", "Inference precision: auto (bf16 on CUDA and on CPUs with native bf16), fp32 or "
              "bf16.", choices=("auto", "fp32", "bf16")),
    ParamSpec("input_topic", "/sonar/sidescan/image", "Side-scan image topic (sensor_msgs/Image or CompressedImage)."),
    ParamSpec("input_type", "image", "Message type of input_topic.", choices=("image", "compressed")),
    ParamSpec("input_mode", "frames", "frames: each message is a waterfall frame; pings: each message adds pings "
              "(height-1 images) to a running waterfall.", choices=INPUT_MODES),
    ParamSpec("window", 0, "Window size in pixels; 0 = the checkpoint's (another value must match it).", min_value=0),
    ParamSpec("stride", 0, "Window stride in pixels; 0 = the checkpoint's (64 by default).", min_value=0),
    ParamSpec("batch_size", 64, "Windows per forward pass.", min_value=1, max_value=65536),
    ParamSpec("thresholds", [0.5], "Probability threshold per non-background class (one value for all, or one per "
              "class in the checkpoint's order, e.g. [MILCO, NOMBO]).", read_only=False),
    ParamSpec("publish_overlay", False, "Publish a debug image with the detections drawn.", read_only=False),
    ParamSpec("overlay_rows", 512, "Pings shown in the overlay in pings mode.", min_value=1, max_value=65536),
    ParamSpec("queue_depth", 0, "Messages waiting for inference; when full the oldest is dropped (counted). 0 = auto: "
              "2 frames, or 256 pings (about one window row of a sonar, so bursts of window rows drop nothing).",
              min_value=0, max_value=100000),
    ParamSpec("detections_topic", "~/detections", "Output vision_msgs/Detection2DArray topic (reliable)."),
    ParamSpec("label_info_topic", "~/label_info", "Output vision_msgs/LabelInfo topic (transient local, latched)."),
    ParamSpec("overlay_topic", "~/overlay", "Output debug overlay sensor_msgs/Image topic."),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", min_value=0.05, max_value=3600.0),
    ParamSpec("slant_resolution_m", 0.0, "Slant range per sample (m); > 0 together with altitude_m and ping_spacing_m "
              "puts metric positions in the hypothesis pose.", min_value=0.0),
    ParamSpec("altitude_m", 0.0, "Sonar altitude above the seabed (m), for metric positions.", min_value=0.0),
    ParamSpec("ping_spacing_m", 0.0, "Along-track distance between pings (m), for metric positions.", min_value=0.0),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


class ParameterError(ValueError):
    """An invalid parameter value; the message starts with the parameter's name."""


def check_value(name: str, value: Any) -> None:
    """Raise :class:`ParameterError` when ``value`` is not acceptable for parameter ``name``."""
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        raise ParameterError(f"{name}: unknown parameter")
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value) or not value:
            raise ParameterError(f"{name}: expected a non-empty list of numbers, got {value!r}")
        if any(not 0.0 <= float(v) <= 1.0 for v in value):
            raise ParameterError(f"{name}: values must be within [0, 1], got {list(value)}")
        return
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ParameterError(f"{name}: expected {expected.__name__}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise ParameterError(f"{name}: {value!r} is not one of {list(spec.choices)}")
    if spec.min_value is not None and value < spec.min_value:
        raise ParameterError(f"{name}: {value} is below the minimum {spec.min_value}")
    if spec.max_value is not None and value > spec.max_value:
        raise ParameterError(f"{name}: {value} is above the maximum {spec.max_value}")
    if name == "device" and not (value in ("auto", "cpu") or value.startswith("cuda")):
        raise ParameterError(f"{name}: {value!r} is not auto, cpu or cuda[:N]")


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameter values."""

    values: Mapping[str, Any]

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        merged = {p.name: p.default for p in PARAMS}
        merged.update(values)
        for name, value in merged.items():
            check_value(name, value)
        if not merged["model_path"]:
            raise ParameterError("model_path: required (a checkpoint from `mine-jepa init-model` or `mine-jepa probe`)")
        return cls(merged)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def queue_depth(self) -> int:
        depth = int(self.values["queue_depth"])
        return depth if depth > 0 else (256 if self.values["input_mode"] == "pings" else 2)

    def geometry(self) -> SonarGeometry | None:
        v = self.values
        if v["slant_resolution_m"] > 0 and v["altitude_m"] > 0 and v["ping_spacing_m"] > 0:
            return SonarGeometry(v["slant_resolution_m"], v["altitude_m"], v["ping_spacing_m"])
        return None

    def pipeline_config(self, class_names: list[str]) -> PipelineConfig:
        thresholds = thresholds_for(class_names, list(self.values["thresholds"]))[1:]
        return PipelineConfig(
            input_mode=self.values["input_mode"],
            thresholds=thresholds,
            overlay=bool(self.values["publish_overlay"]),
            overlay_rows=int(self.values["overlay_rows"]),
            geometry=self.geometry(),
        )
