"""The node's parameters, without ROS: one typed record, :class:`NodeSettings`.

Each field of :class:`NodeSettings` is one ROS parameter: its default, description and limits sit
in the field's metadata. ``read_only`` marks a parameter that takes effect at the lifecycle's
configure transition: the node accepts a new value only while it is unconfigured (the others are
dynamic: they apply at once in any state). :data:`PARAMS` lists them in declaration order for the node (which
declares them with descriptors), and the tests check ``config/mine_jepa.yaml``, the launch files
and the README against it. :meth:`NodeSettings.from_values` validates a whole set of values and
raises :class:`~mine_jepa_ros.errors.ParameterError` naming the first bad parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from mine_jepa_ros.detect.backends import BACKENDS, DetectorOptions, backend_for
from mine_jepa_ros.detect.localise import LOCALISATIONS
from mine_jepa_ros.detect.metadata import FLIP_VIEWS, RESCORINGS
from mine_jepa_ros.detect.onnx_backend import provider_names, split_providers
from mine_jepa_ros.detect.pipeline import INPUT_MODES, PipelineConfig
from mine_jepa_ros.errors import ParameterError, UserError
from mine_jepa_ros.geo.contacts import ContactSettings
from mine_jepa_ros.geo.journal import ContactJournal
from mine_jepa_ros.geo.navigation import SensorMounting
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.input_types import DRIVER_INPUT_TYPES, NODE_INPUT_TYPES



def _param(default: Any, description: str, read_only: bool = True, choices: tuple[str, ...] = (),
           min_value: float | None = None, max_value: float | None = None) -> Any:
    spec = {"description": description, "read_only": read_only, "choices": choices, "min_value": min_value,
            "max_value": max_value}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=spec)
    return field(default=default, metadata=spec)


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: name, default and what the node's ``ParameterDescriptor`` says of it."""

    name: str
    default: Any
    description: str
    read_only: bool = True
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameter values of ``mine_jepa_node`` (one attribute per ROS parameter)."""

    autostart: bool = _param(True, "Configure and activate at start, so ros2 run and the launch file detect at once; "
                             "false: stay unconfigured until a lifecycle manager (or ros2 lifecycle set) configures "
                             "and activates the node.")
    model_path: str = _param("", "The model: an exported .onnx (`mine-jepa export [--int8]`; ONNX Runtime, no torch "
                             "needed) or a .safetensors checkpoint (`mine-jepa probe`; torch).")
    backend: str = _param("auto", "Inference backend: auto (onnxruntime for .onnx, torch for .safetensors), torch or "
                          "onnxruntime.", choices=BACKENDS)
    providers: str = _param("", "onnxruntime: execution providers in order of preference, comma-separated (cpu, cuda, "
                            "tensorrt; CUDA and TensorRT need onnxruntime-gpu); empty = CUDA where available, else "
                            "CPU (CPU only with device cpu).")
    device: str = _param("auto", "torch: inference device auto, cpu or cuda[:N]; CUDA absent -> CPU with one warning "
                         "(onnxruntime: cpu restricts the default providers to the CPU).")
    precision: str = _param("auto", "torch: inference precision auto (bf16 on CUDA and on CPUs with native bf16), fp32 "
                            "or bf16 (an ONNX model runs at its own precision, fp32 or INT8).",
                            choices=("auto", "fp32", "bf16"))
    input_topic: str = _param("/sonar/sidescan/image", "Side-scan image topic (sensor_msgs/Image or CompressedImage; "
                              "smarc_msgs/Sidescan for smarc_sidescan).")
    input_type: str = _param("image", "What the sonar publishes: image / compressed on input_topic; raw_sonar_image: "
                             "marine_acoustic_msgs/RawSonarImage per channel on port_topic and starboard_topic, paired "
                             "by stamp; smarc_sidescan: smarc_msgs/Sidescan on input_topic (the driver inputs need "
                             "input_mode pings).", choices=NODE_INPUT_TYPES)
    input_mode: str = _param("frames", "frames: each message is a waterfall frame; pings: each message adds pings "
                             "(height-1 images) to a running waterfall.", choices=INPUT_MODES)
    input_reliability: str = _param("best_effort", "QoS reliability of the sonar subscriptions: best_effort (sensor "
                                    "data; matches any publisher) or reliable (lost fragments are resent: large frames, "
                                    "e.g. 256 x 1024 pixels, arrive over DDS where best effort drops them; needs a "
                                    "reliable publisher).", choices=("best_effort", "reliable"))
    window: int = _param(0, "Window size in pixels; 0 = the checkpoint's (another value must match it).", min_value=0)
    stride: int = _param(0, "Window stride in pixels; 0 = the checkpoint's (64 by default; `mine-jepa calibrate "
                         "--stride` stores the one its operating point was chosen at).", min_value=0)
    flip_views: int = _param(0, "Mirrored views of each window classified and averaged: 1 (as it is), 2 (also mirrored "
                             "along track) or 4 (also across track, and both); 0 = the checkpoint's (`mine-jepa "
                             "calibrate --flip-views`). Costs that many forward passes per window.", min_value=0,
                             max_value=4)
    rescoring: str = _param("", "A detection's score: windows (its windows' highest probability) or centred (the "
                            "probability of the window centred on it, one more window per detection; window head "
                            "only); empty = the checkpoint's (`mine-jepa calibrate --rescoring`: its thresholds were "
                            "chosen with it).", choices=("", *RESCORINGS))
    localisation: str = _param("echo", "Where a detection's centre is put: echo (moved onto the object's highlight and "
                               "shadow in the pixels, one detection per class per echo) or windows (the weighted mean of "
                               "its windows' centres).",
                               choices=LOCALISATIONS)
    batch_size: int = _param(64, "Windows per forward pass.", min_value=1, max_value=65536)
    thresholds: list[float] = _param([], "Probability threshold per non-background class (one value for all, or one "
                                     "per class in the checkpoint's order, e.g. [MILCO, NOMBO]); empty = the checkpoint's "
                                     "operating point (mine-jepa calibrate).", read_only=False)
    publish_overlay: bool = _param(False, "Publish a debug image with the detections drawn.", read_only=False)
    overlay_rows: int = _param(512, "Pings shown in the overlay in pings mode.", min_value=1, max_value=65536)
    queue_depth: int = _param(0, "Messages waiting for inference; when full the oldest is dropped (counted). 0 = auto: "
                              "2 frames, or 256 pings (about one window row of a sonar, so bursts of window rows drop "
                              "nothing).", min_value=0, max_value=100000)
    detections_topic: str = _param("~/detections", "Output vision_msgs/Detection2DArray topic (reliable).")
    label_info_topic: str = _param("~/label_info", "Output vision_msgs/LabelInfo topic (transient local, latched).")
    overlay_topic: str = _param("~/overlay", "Output debug overlay sensor_msgs/Image topic.")
    publish_annotations: bool = _param(True, "Publish the detections as foxglove_msgs/ImageAnnotations (box, class, "
                                       "score) for Foxglove's Image panel: on each input frame's stamp (frames), or "
                                       "with each ~/overlay waterfall (pings mode, needs publish_overlay).",
                                       read_only=False)
    annotations_topic: str = _param("~/annotations", "Output foxglove_msgs/ImageAnnotations topic (reliable).")
    diagnostics_period: float = _param(1.0, "Seconds between /diagnostics messages.", min_value=0.05, max_value=3600.0)
    port_topic: str = _param("/sonar/sidescan/image_port", "raw_sonar_image: the port channel's topic.")
    starboard_topic: str = _param("/sonar/sidescan/image_starboard", "raw_sonar_image: the starboard channel's topic.")
    pair_tolerance_s: float = _param(0.02, "raw_sonar_image: port and starboard stamps closer than this are one ping; "
                                     "a channel without a partner is dropped and counted.", min_value=0.0, max_value=10.0)
    slant_resolution_m: float = _param(0.0, "Slant range per sample (m); > 0 together with altitude_m and "
                                       "ping_spacing_m puts metric positions in the hypothesis pose.", min_value=0.0)
    altitude_m: float = _param(0.0, "Sonar altitude above the seabed (m), for metric positions.", min_value=0.0)
    ping_spacing_m: float = _param(0.0, "Along-track distance between pings (m), for metric positions.", min_value=0.0)
    fix_topic: str = _param("", "sensor_msgs/NavSatFix of the navigation reference; empty = no navigation (no "
                            "georeferenced contacts; diagnostics say positions are unavailable).")
    heading_topic: str = _param("", "Heading topic (ENU orientation; type heading_type); empty = the course over "
                                "ground of the fixes.")
    heading_type: str = _param("quaternion_stamped", "Message type of heading_topic.",
                               choices=("quaternion_stamped", "imu", "odometry"))
    altitude_topic: str = _param("", "sensor_msgs/Range altitude above the seabed; empty = altitude_m.")
    navigation_reliability: str = _param("best_effort", "QoS reliability of the navigation subscriptions (fix, heading, "
                                         "altitude): best_effort (sensor data; matches any publisher) or reliable "
                                         "(none lost to a burst, e.g. a bag played at a high rate; needs a reliable "
                                         "publisher).",
                                         choices=("best_effort", "reliable"))
    nav_max_gap_s: float = _param(2.0, "Longest gap between navigation samples to interpolate across (s); a ping in a "
                                  "longer gap is not located (counted).", min_value=0.0, max_value=3600.0)
    layback_m: float = _param(0.0, "Towed sonar: distance behind the navigation reference along track (m).",
                              min_value=0.0)
    sensor_offset_x_m: float = _param(0.0, "Sonar lever arm forward of the navigation reference (m).")
    sensor_offset_y_m: float = _param(0.0, "Sonar lever arm left of the navigation reference (m; REP-103).")
    contacts_topic: str = _param("~/contacts", "Output geographic_msgs/GeographicMap of the fused contacts (transient "
                                 "local; republished when a contact changes).")
    contacts_geojson_topic: str = _param("~/contacts_geojson", "Output foxglove_msgs/GeoJSON of the contacts (styled "
                                         "points with their properties) and the vehicle track, for Foxglove's Map "
                                         "panel (transient local; with the contacts).")
    contacts_file: str = _param("", "Journal of the contacts: restored at configure (same UUIDs, republished at "
                                "activate) and replaced atomically on every change, so a restarted node goes on with "
                                "them; a corrupt or foreign file is renamed aside with one warning; empty = in memory "
                                "only.")
    contact_gate_m: float = _param(3.0, "Detections closer than this (m) to a contact fuse into it.", min_value=0.0)
    contact_look_gap_s: float = _param(10.0, "Sightings of a contact further apart in time (s) are separate looks.",
                                       min_value=0.0)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        """Defaults overridden by ``values``, every value checked; raises ParameterError naming the parameter."""
        merged = {p.name: p.default for p in PARAMS}
        merged.update(values)
        for name, value in merged.items():
            check_value(name, value)
        if not merged["model_path"]:
            raise ParameterError("model_path: required (an .onnx model from `mine-jepa export`, or a checkpoint from "
                                 "`mine-jepa probe`)")
        try:
            backend = backend_for(merged["model_path"], merged["backend"])
        except UserError as exc:
            raise ParameterError(f"backend: {exc}") from exc
        try:
            providers = provider_names(split_providers(merged["providers"])) if merged["providers"] else []
        except UserError as exc:
            raise ParameterError(f"providers: {exc}") from exc
        if providers and backend != "onnxruntime":
            raise ParameterError(f"providers: only the onnxruntime backend has execution providers; {merged['model_path']} "
                                 "runs on torch (use device)")
        merged["thresholds"] = [float(v) for v in merged["thresholds"]]
        for spec in PARAMS:
            if isinstance(spec.default, float):
                merged[spec.name] = float(merged[spec.name])
        if merged["flip_views"] not in (0, *FLIP_VIEWS):
            raise ParameterError(f"flip_views: {merged['flip_views']} is not 0 (the checkpoint's) or one of {FLIP_VIEWS}")
        if merged["contacts_file"] and not merged["fix_topic"]:
            raise ParameterError("contacts_file: contacts are only made with navigation: set fix_topic too")
        if merged["input_type"] in DRIVER_INPUT_TYPES and merged["input_mode"] != "pings":
            raise ParameterError(f"input_mode: {merged['input_type']} sends one ping per message: set input_mode to pings")
        return cls(**merged)

    @property
    def provider_list(self) -> tuple[str, ...]:
        """``providers`` as a tuple (empty: the default choice)."""
        return split_providers(self.providers)

    @property
    def effective_queue_depth(self) -> int:
        """``queue_depth``, or its automatic value (2 frames, 256 pings) when it is 0."""
        if self.queue_depth > 0:
            return self.queue_depth
        return 256 if self.input_mode == "pings" else 2

    @property
    def navigation(self) -> bool:
        """Whether a fix topic is set: detections are then georeferenced into contacts."""
        return bool(self.fix_topic)

    def contact_journal(self) -> ContactJournal | None:
        """The ``contacts_file`` journal, or None."""
        return ContactJournal(self.contacts_file) if self.contacts_file else None

    def contact_settings(self) -> ContactSettings:
        return ContactSettings(gate_m=self.contact_gate_m, look_gap_s=self.contact_look_gap_s)

    def mounting(self) -> SensorMounting:
        return SensorMounting(self.layback_m, self.sensor_offset_x_m, self.sensor_offset_y_m)

    def geometry(self) -> SonarGeometry | None:
        return SonarGeometry.from_values(self.slant_resolution_m, self.altitude_m, self.ping_spacing_m)

    def pipeline_config(self) -> PipelineConfig:
        """The pipeline's configuration (:func:`~mine_jepa_ros.detect.backends.load_detector` adds
        the thresholds in force)."""
        return PipelineConfig(input_mode=self.input_mode, overlay=self.publish_overlay, overlay_rows=self.overlay_rows,
                              geometry=self.geometry(), localisation=self.localisation)

    def detector_options(self) -> DetectorOptions:
        """How the model runs; empty thresholds mean the checkpoint's operating point."""
        return DetectorOptions(self.backend, tuple(self.provider_list), self.device, self.precision, self.batch_size,
                               self.thresholds or None, window=self.window or None, stride=self.stride or None,
                               flip_views=self.flip_views or None, rescoring=self.rescoring or None)


PARAMS: tuple[ParamSpec, ...] = tuple(
    ParamSpec(f.name, f.default_factory() if callable(f.default_factory) else f.default, **f.metadata)
    for f in fields(NodeSettings)
)
"""Every parameter in declaration order (the order of ``config/mine_jepa.yaml``)."""

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def check_value(name: str, value: Any) -> None:
    """Raise :class:`ParameterError` when ``value`` is not acceptable for parameter ``name``."""
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        raise ParameterError(f"{name}: unknown parameter")
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
            raise ParameterError(f"{name}: expected a list of numbers, got {value!r}")
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
