"""``mine_jepa_node``: the ROS 2 adapter (the only module that imports rclpy).

Everything it does lives in ROS-free modules: parameters (:mod:`mine_jepa_ros.ros.params`), the
pipeline (:mod:`mine_jepa_ros.detect.pipeline`), the queue, worker and health
(:mod:`mine_jepa_ros.ros.worker`) and message building (:mod:`mine_jepa_ros.io.detections`,
duck-typed over rclpy classes here).

Topics: input (sensor-data QoS: best effort, or reliable with ``input_reliability``; small depth:
``Image`` / ``CompressedImage``, or a side-scan driver's ``RawSonarImage`` port and starboard
channels, or ``smarc_msgs/Sidescan``; driver messages become waterfall rows in
:mod:`mine_jepa_ros.ros.sensing`) -> ``~/detections``
(``vision_msgs/Detection2DArray``, reliable), ``~/label_info`` (``vision_msgs/LabelInfo``,
transient local), ``~/overlay`` (``sensor_msgs/Image``, when ``publish_overlay``) and
``/diagnostics``. With a ``fix_topic`` (and optionally heading and altitude topics), detections are
georeferenced and fused into contacts, published on ``~/contacts`` (``geographic_msgs/GeographicMap``,
transient local) whenever one changes.

Shutdown: SIGINT / SIGTERM end the spin loop while the ROS context is still valid; the worker then
stops, the open ping stream is flushed, its last detections are published and acknowledged by the
subscribers (up to a timeout), and only then is the context shut down, so nothing is lost and
nothing prints a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from functools import partial
from types import FrameType
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from mine_jepa_ros.detect.backends import load_detector
from mine_jepa_ros.geo.tracking import contacts_map_msg
from mine_jepa_ros.detect.operating_point import thresholds_in_force
from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineOutput
from mine_jepa_ros.errors import MineJepaError, ParameterError
from mine_jepa_ros.io.detections import detections_to_msg, label_info_msg
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns
from mine_jepa_ros.io.navigation import ALTITUDE_TYPE, FIX_TYPE, HEADING_TYPES
from mine_jepa_ros.io.sonar_drivers import RAW_SONAR_IMAGE_TYPE, SMARC_SIDESCAN_TYPE, DriverAssembler
from mine_jepa_ros.input_types import DRIVER_INPUT_TYPES
from mine_jepa_ros.ros.params import PARAMS, NodeSettings, check_value
from mine_jepa_ros.ros.sensing import NavigationFusion, driver_diagnostics
from mine_jepa_ros.ros.worker import DetectionWorker, DropOldestQueue, HealthMonitor

HEADING_TYPE = dict(zip(("quaternion_stamped", "imu", "odometry"), HEADING_TYPES))


def _descriptor(spec: Any) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = f"one of {list(spec.choices)}"
    if isinstance(spec.default, bool):
        return desc
    if isinstance(spec.default, int) and spec.min_value is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value or 2**31 - 1), step=1)]
    elif isinstance(spec.default, float) and spec.min_value is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min_value), to_value=float(spec.max_value or 1e12), step=0.0)]
    return desc


def _message_class(factory: MessageFactory, msgtype: str, parameter: str) -> Any:
    """The rclpy class of ``msgtype``; a package that is not installed (the driver, geographic and
    nav_msgs interfaces may not be) is a parameter error saying how to get it, not a traceback."""
    try:
        return factory.cls(msgtype)
    except ImportError as exc:
        package = msgtype.split("/")[0]
        raise ParameterError(f"{parameter}: needs {package}, which is not installed here ({exc}); build it with "
                             "`python -m mine_jepa_ros.interfaces.build` (or install it from your ROS distribution)") from exc


ACK_TIMEOUT_S = 5.0
"""How long the shutdown waits for subscribers to acknowledge the last detections (Fast DDS sends
its heartbeats, which readers acknowledge, every 3 s by default)."""


class MineJepaNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("mine_jepa_node", **kwargs)
        values = {}
        for spec in PARAMS:
            # A list parameter is declared by type: its default (empty) would not say it holds doubles.
            default = Parameter.Type.DOUBLE_ARRAY if isinstance(spec.default, list) else spec.default
            try:
                values[spec.name] = self.declare_parameter(spec.name, default, _descriptor(spec)).value
            except ParameterException as exc:  # e.g. an override of the wrong type
                raise ParameterError(f"{spec.name}: {exc}") from exc
        values["thresholds"] = list(values["thresholds"] or [])  # unset = empty = the checkpoint's operating point
        self.settings = NodeSettings.from_values(values)  # raises ParameterError naming the parameter
        s = self.settings
        self.pipeline = load_detector(s.model_path, s.detector_options(), s.pipeline_config(), window=s.window or None,
                                      stride=s.stride or None)
        for warning in self.pipeline.classifier.warnings:
            self.get_logger().warning(warning)
        self.operating_point = self.pipeline.classifier.metadata.op(s.model_path)
        self.factory = MessageFactory.for_rclpy()

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        from vision_msgs.msg import Detection2DArray, LabelInfo

        self.det_pub = self.create_publisher(Detection2DArray, s.detections_topic, reliable)
        self.label_pub = self.create_publisher(LabelInfo, s.label_info_topic, latched)
        self.overlay_pub = self.create_publisher(Image, s.overlay_topic, reliable)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_label_info()

        self.queue = DropOldestQueue(s.effective_queue_depth)
        self.worker = DetectionWorker(self.pipeline, self.queue, self._publish)
        self.health = HealthMonitor(window_s=max(10.0, 5 * s.diagnostics_period))
        self.fusion: NavigationFusion | None = None
        if s.navigation:
            map_cls = _message_class(self.factory, "geographic_msgs/msg/GeographicMap", "fix_topic")
            self.fusion = NavigationFusion(s.contact_settings(), s.mounting(), s.geometry(), s.nav_max_gap_s)
            self.contacts_pub = self.create_publisher(map_cls, s.contacts_topic, latched)
        self.worker.start()
        sensor_qos = QoSProfile(depth=max(s.effective_queue_depth, qos_profile_sensor_data.depth),
                                reliability=ReliabilityPolicy.BEST_EFFORT)
        input_qos = QoSProfile(depth=sensor_qos.depth, reliability=ReliabilityPolicy.RELIABLE
                               if s.input_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)
        self.assembler = DriverAssembler(s.pair_tolerance_s)
        self.subs = self._subscribe_inputs(input_qos)
        if self.fusion is not None:
            self.subs += self._subscribe_navigation(sensor_qos)
        self.diag_timer = self.create_timer(s.diagnostics_period, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._dropped_logged = 0
        self.get_logger().info(
            f"listening on {', '.join(sub.topic_name for sub in self.subs)} ({s.input_type}, {s.input_mode}); model "
            f"{s.model_path} ({self.pipeline.classifier.metadata.arch}, classes {self.pipeline.class_names}) on "
            f"{self.pipeline.classifier.device_name} ({self.pipeline.classifier.precision_name})"
            + ("" if self.fusion is None else f"; contacts on {self.contacts_pub.topic_name}")
        )

    def _subscribe_inputs(self, qos: QoSProfile) -> list[Any]:
        s = self.settings
        if s.input_type == "raw_sonar_image":
            channel_cls = _message_class(self.factory, RAW_SONAR_IMAGE_TYPE, "input_type")
            return [self.create_subscription(channel_cls, topic, partial(self._on_channel, side), qos)
                    for side, topic in (("port", s.port_topic), ("starboard", s.starboard_topic))]
        if s.input_type == "smarc_sidescan":
            ping_cls = _message_class(self.factory, SMARC_SIDESCAN_TYPE, "input_type")
            return [self.create_subscription(ping_cls, s.input_topic, self._on_smarc, qos)]
        msg_type = Image if s.input_type == "image" else CompressedImage
        return [self.create_subscription(msg_type, s.input_topic, self._on_image, qos)]

    def _subscribe_navigation(self, qos: QoSProfile) -> list[Any]:
        s = self.settings
        assert self.fusion is not None
        wanted = [(s.fix_topic, FIX_TYPE, "fix_topic"), (s.heading_topic, HEADING_TYPE[s.heading_type], "heading_type"),
                  (s.altitude_topic, ALTITUDE_TYPE, "altitude_topic")]
        return [self.create_subscription(_message_class(self.factory, msgtype, parameter), topic,
                                         partial(self.fusion.add_nav, msgtype=msgtype), qos)
                for topic, msgtype, parameter in wanted if topic]

    # -- callbacks ------------------------------------------------------------------------------
    def _on_channel(self, side: str, msg: Any) -> None:
        for rows in self.assembler.channel(side, msg):
            self._on_image(rows)

    def _on_smarc(self, msg: Any) -> None:
        for rows in self.assembler.smarc(msg):
            self._on_image(rows)

    def _on_image(self, msg: Any) -> None:
        if self.queue.put(msg):
            dropped = self.queue.dropped
            if dropped >= 2 * max(self._dropped_logged, 1) or self._dropped_logged == 0:
                self.get_logger().warning(f"inference is slower than the input: {dropped} message(s) dropped so far")
                self._dropped_logged = dropped

    def _publish(self, out: PipelineOutput) -> None:
        self.det_pub.publish(detections_to_msg(self.factory, out.detections, out.header))
        if self.fusion is not None:
            width = out.shape[1] or self.pipeline.stream_width
            if self.fusion.add_detections(out.detections, stamp_ns(out.header), width):
                self.contacts_pub.publish(contacts_map_msg(self.factory, self.fusion.contacts(), out.header))
        if out.overlay is not None and self.pipeline.config.overlay:
            self.overlay_pub.publish(encode_image(self.factory, out.overlay, out.header, "bgr8"))

    def _publish_label_info(self) -> None:
        header = self.factory.header(self.get_clock().now().nanoseconds, "")
        self.label_pub.publish(label_info_msg(self.factory, self.pipeline.class_names, header,
                                              self.pipeline.thresholds.lowest))

    def _publish_diagnostics(self) -> None:
        level, summary, values = self.health.assess(self.pipeline, self.queue, self.worker)
        values = {**values, **(self.fusion.diagnostics() if self.fusion is not None else
                               {"positions": "unavailable (no fix_topic: detections are not georeferenced)"})}
        if self.settings.input_type in DRIVER_INPUT_TYPES:
            values.update(driver_diagnostics(self.assembler))
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.get_name()}: detector", message=summary,
                                  hardware_id=self.pipeline.classifier.device_name,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        thresholds = None
        try:
            for p in params:
                value = list(p.value or []) if p.name == "thresholds" else p.value
                check_value(p.name, value)
                if p.name == "thresholds":
                    thresholds = thresholds_in_force(self.pipeline.class_names, value, self.operating_point,
                                                     self.settings.model_path)
        except MineJepaError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for p in params:
            if p.name == "thresholds" and thresholds is not None:
                self.worker.update(partial(DetectionPipeline.set_thresholds, thresholds=thresholds))
                self._publish_label_info()
            elif p.name == "publish_overlay":
                self.worker.update(partial(DetectionPipeline.set_overlay, on=bool(p.value)))
        return SetParametersResult(successful=True)

    def shutdown(self) -> None:
        """Stop the worker; while the context is valid, publish what the open ping stream still holds
        and wait for it to be acknowledged."""
        publishing = self.context.ok()
        self.worker.stop(flush=publishing)
        if not publishing:
            return
        if not self.det_pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
            self.get_logger().warning(f"the last detections were not acknowledged within {ACK_TIMEOUT_S} s")
        if self.fusion is not None and not self.contacts_pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
            self.get_logger().warning(f"the last contacts were not acknowledged within {ACK_TIMEOUT_S} s")
        d = self.pipeline.stats
        self.get_logger().info(f"stopped: {d.received} received, {d.processed} processed, {d.skipped} skipped, "
                               f"{self.queue.dropped} dropped, {d.detections} detections")


def main(args: list[str] | None = None) -> int:
    # rclpy's own signal handler shuts the context down at once, before the final flush could be
    # published: handle SIGINT / SIGTERM here and shut down in order instead.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    node: MineJepaNode | None = None
    try:
        node = MineJepaNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    except (MineJepaError, OSError) as exc:
        print(f"mine_jepa_node: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
