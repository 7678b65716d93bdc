"""``mine_jepa_node``: the ROS 2 adapter (the only module that imports rclpy), a managed
(``rclpy.lifecycle``) node.

Lifecycle: configure reads and validates the parameters, loads and checks the model and restores
the ``contacts_file`` journal (a failure is a failed transition with the reason in one log line and
in ``/diagnostics``; the node stays unconfigured); activate enables the publishers, republishes the
latched label info and contacts, and subscribes to the inputs; deactivate unsubscribes, processes
what is queued, flushes the open ping stream and publishes its last detections, keeping the model;
cleanup releases the model. With ``autostart`` (the default) the node configures and activates
itself at start (a failed configure then ends the process with status 2, as before). Parameters
that apply at configure can be changed only while unconfigured. ``/diagnostics`` reports in every
state.

Everything it does lives in ROS-free modules: parameters (:mod:`mine_jepa_ros.ros.params`), the
pipeline (:mod:`mine_jepa_ros.detect.pipeline`), the queue, worker and health
(:mod:`mine_jepa_ros.ros.worker`) and message building (:mod:`mine_jepa_ros.io.detections`,
duck-typed over rclpy classes here).

Topics: input (sensor-data QoS: best effort, or reliable with ``input_reliability``; small depth:
``Image`` / ``CompressedImage``, or a side-scan driver's ``RawSonarImage`` port and starboard
channels, or ``smarc_msgs/Sidescan``; driver messages become waterfall rows in
:mod:`mine_jepa_ros.ros.sensing`) -> ``~/detections``
(``vision_msgs/Detection2DArray``, reliable), ``~/label_info`` (``vision_msgs/LabelInfo``,
transient local), ``~/overlay`` (``sensor_msgs/Image``, when ``publish_overlay``), ``~/annotations``
(``foxglove_msgs/ImageAnnotations``) and ``/diagnostics``. With a ``fix_topic`` (and optionally
heading and altitude topics; best effort, or reliable with ``navigation_reliability``, with a deep
history, :data:`NAVIGATION_DEPTH`), detections are georeferenced and fused into contacts, published on
``~/contacts`` (``geographic_msgs/GeographicMap``) and ``~/contacts_geojson``
(``foxglove_msgs/GeoJSON``, with the track), both transient local, whenever one changes.

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
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from mine_jepa_ros.detect.backends import load_detector
from mine_jepa_ros.geo.formats import contacts_geojson_text
from mine_jepa_ros.geo.tracking import contacts_map_msg
from mine_jepa_ros.detect.operating_point import thresholds_in_force
from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineOutput
from mine_jepa_ros.errors import MineJepaError, ParameterError
from mine_jepa_ros.io.annotations import image_annotations_msg
from mine_jepa_ros.io.detections import detections_to_msg, label_info_msg
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns
from mine_jepa_ros.io.navigation import ALTITUDE_TYPE, FIX_TYPE, HEADING_TYPES
from mine_jepa_ros.io.sonar_drivers import RAW_SONAR_IMAGE_TYPE, SMARC_SIDESCAN_TYPE, DriverAssembler
from mine_jepa_ros.input_types import DRIVER_INPUT_TYPES
from mine_jepa_ros.ros.params import PARAMS, PARAMS_BY_NAME, NodeSettings, check_value
from mine_jepa_ros.ros.sensing import NavigationFusion, driver_diagnostics
from mine_jepa_ros.ros.worker import ERROR, OK, DetectionWorker, DropOldestQueue, HealthMonitor, WorkerStats

HEADING_TYPE = dict(zip(("quaternion_stamped", "imu", "odometry"), HEADING_TYPES))


def _descriptor(spec: Any) -> ParameterDescriptor:
    text = spec.description + (" Applies at configure: set it while the node is unconfigured." if spec.read_only else "")
    desc = ParameterDescriptor(description=text)
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
NAVIGATION_DEPTH = 1000
"""History depth of the navigation subscriptions: the messages are small, and a deep history rides out a
burst (a bag played fast, a driver catching up) while the executor is busy with sonar data."""


class MineJepaNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("mine_jepa_node", **kwargs)
        for spec in PARAMS:
            # A list parameter is declared by type: its default (empty) would not say it holds doubles.
            default = Parameter.Type.DOUBLE_ARRAY if isinstance(spec.default, list) else spec.default
            try:
                self.declare_parameter(spec.name, default, _descriptor(spec))
            except ParameterException as exc:  # e.g. an override of the wrong type
                raise ParameterError(f"{spec.name}: {exc}") from exc
        self.factory = MessageFactory.for_rclpy()
        self.state_label = "unconfigured"
        self.configure_error = ""
        self.settings: NodeSettings | None = None
        self.pipeline: DetectionPipeline | None = None
        self.fusion: NavigationFusion | None = None
        self.worker: DetectionWorker | None = None
        self.subs: list[Any] = []
        self.pubs: dict[str, Any] = {}
        self.queue = DropOldestQueue(1)
        self.worker_stats = WorkerStats()
        self.assembler = DriverAssembler(0.0)
        self._dropped_logged = 0
        self._journal_failures_logged = 0
        self.annotations_on = True
        period = self._value("diagnostics_period")
        try:
            check_value("diagnostics_period", period)
        except ParameterError:
            period = 1.0  # configure names the bad value; diagnostics go on at the default rate meanwhile
        self.health = HealthMonitor(window_s=max(10.0, 5 * period))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)  # in every state
        self.diag_timer = self.create_timer(period, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- lifecycle ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            values = {spec.name: self._value(spec.name) for spec in PARAMS}
            values["thresholds"] = list(values["thresholds"] or [])  # unset = empty = the checkpoint's operating point
            s = NodeSettings.from_values(values)  # raises ParameterError naming the parameter
            pipeline = load_detector(s.model_path, s.detector_options(), s.pipeline_config())
            types = self._output_types(s)
        except (MineJepaError, OSError) as exc:
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.settings, self.pipeline, self.configure_error = s, pipeline, ""
        self.annotations_on = s.publish_annotations
        for warning in pipeline.classifier.warnings:
            self.get_logger().warning(warning)
        self.operating_point = pipeline.classifier.metadata.op(s.model_path)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        topics = {"detections": (s.detections_topic, reliable), "label_info": (s.label_info_topic, latched),
                  "overlay": (s.overlay_topic, reliable), "annotations": (s.annotations_topic, reliable),
                  "contacts": (s.contacts_topic, latched), "contacts_geojson": (s.contacts_geojson_topic, latched)}
        self.pubs = {key: self.create_lifecycle_publisher(types[key], *topics[key]) for key in types}
        if s.navigation:
            self.fusion = NavigationFusion(s.contact_settings(), s.mounting(), s.geometry(), s.nav_max_gap_s,
                                           s.contact_journal())
            if self.fusion.restore_warning:
                self.get_logger().warning(self.fusion.restore_warning)
            elif s.contacts_file:
                self.get_logger().info(f"contacts_file {s.contacts_file}: {self.fusion.restored} contact(s) restored")
        self.queue = DropOldestQueue(s.effective_queue_depth)
        self.worker_stats = WorkerStats()
        self.health = HealthMonitor(window_s=max(10.0, 5 * s.diagnostics_period))
        self.worker = DetectionWorker(pipeline, self.queue, self._publish, stats=self.worker_stats)
        self.state_label = "inactive"
        if s.input_mode == "pings" and s.publish_annotations and not s.publish_overlay:
            self.get_logger().info("publish_annotations: in pings mode the annotations go with the ~/overlay waterfall; "
                                   "set publish_overlay to publish both")
        self.get_logger().info(
            f"configured: model {s.model_path} ({pipeline.classifier.metadata.arch}, classes {pipeline.class_names}) on "
            f"{pipeline.classifier.device_name} ({pipeline.classifier.precision_name}), windows at stride "
            f"{pipeline.stride}, {pipeline.flip_views} flip view(s), localised on the "
            f"{pipeline.config.localisation}, each scored from "
            f"{'the window centred on it' if pipeline.rescoring == 'centred' else 'its windows'}")
        return super().on_configure(state)

    def _value(self, name: str) -> Any:
        """A declared parameter's value; None for a list left unset."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None

    def _output_types(self, s: NodeSettings) -> dict[str, Any]:
        """The message class of each output (the optional Foxglove ones left out, with a warning,
        where foxglove_msgs is not installed)."""
        from vision_msgs.msg import Detection2DArray, LabelInfo

        types: dict[str, Any] = {"detections": Detection2DArray, "label_info": LabelInfo, "overlay": Image}
        if s.navigation:
            types["contacts"] = _message_class(self.factory, "geographic_msgs/msg/GeographicMap", "fix_topic")
        wanted = [("annotations", "foxglove_msgs/msg/ImageAnnotations", "publish_annotations")] + (
            [("contacts_geojson", "foxglove_msgs/msg/GeoJSON", "contacts_geojson_topic")] if s.navigation else [])
        for key, msgtype, parameter in wanted:
            try:
                types[key] = _message_class(self.factory, msgtype, parameter)
            except ParameterError as exc:
                self.get_logger().warning(f"{exc}: not publishing {key}")
        return types

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.settings is not None and self.pipeline is not None
        s = self.settings
        result = super().on_activate(state)  # enables the publishers
        self.queue.reopen()
        if self.worker is None or self.worker.ident is not None:  # a thread runs once: a new one per activation
            self.worker = DetectionWorker(self.pipeline, self.queue, self._publish, stats=self.worker_stats)
        self.worker.start()
        self._publish_label_info()
        if self.fusion is not None and self.fusion.contacts():
            self._publish_contacts(self.factory.header(self.get_clock().now().nanoseconds, ""))
        depth = max(s.effective_queue_depth, qos_profile_sensor_data.depth)

        def qos(reliability: str, history: int) -> QoSProfile:
            return QoSProfile(depth=history, reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                              else ReliabilityPolicy.BEST_EFFORT)

        input_qos = qos(s.input_reliability, depth)
        nav_qos = qos(s.navigation_reliability, max(depth, NAVIGATION_DEPTH))
        self.assembler = DriverAssembler(s.pair_tolerance_s)
        try:
            self.subs = self._subscribe_inputs(s, input_qos)
            if self.fusion is not None:
                self.subs += self._subscribe_navigation(s, nav_qos)
        except MineJepaError as exc:  # a driver or navigation interface that is not installed
            self.get_logger().error(f"activate failed: {exc}")
            self._stop_input(flush=False)
            super().on_deactivate(state)  # back to inactive: the publishers off again
            return TransitionCallbackReturn.FAILURE
        self.state_label = "active"
        self.get_logger().info(f"active: listening on {', '.join(sub.topic_name for sub in self.subs)} "
                               f"({s.input_type}, {s.input_mode})")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self.state_label = "inactive"
        self.get_logger().info("inactive: input paused, model kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input(flush=False)
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_input(self, flush: bool = True) -> None:
        """Unsubscribe; process what is queued; with ``flush`` (and a valid context) publish what the
        open ping stream holds and wait for it to be acknowledged."""
        for sub in self.subs:
            self.destroy_subscription(sub)
        self.subs = []
        publishing = flush and self.context.ok()
        if self.worker is not None and self.worker.is_alive():
            self.worker.stop(flush=publishing)
        if not publishing:
            return
        for key in ("detections", "contacts"):
            pub = self.pubs.get(key)
            if pub is not None and not pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
                self.get_logger().warning(f"the last {key} were not acknowledged within {ACK_TIMEOUT_S} s")

    def _release(self) -> None:
        for pub in self.pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self.pubs = {}
        self.pipeline = self.fusion = self.worker = self.settings = None
        self.state_label = "unconfigured"

    def _subscribe_inputs(self, s: NodeSettings, qos: QoSProfile) -> list[Any]:
        if s.input_type == "raw_sonar_image":
            channel_cls = _message_class(self.factory, RAW_SONAR_IMAGE_TYPE, "input_type")
            return [self.create_subscription(channel_cls, topic, partial(self._on_channel, side), qos)
                    for side, topic in (("port", s.port_topic), ("starboard", s.starboard_topic))]
        if s.input_type == "smarc_sidescan":
            ping_cls = _message_class(self.factory, SMARC_SIDESCAN_TYPE, "input_type")
            return [self.create_subscription(ping_cls, s.input_topic, self._on_smarc, qos)]
        msg_type = Image if s.input_type == "image" else CompressedImage
        return [self.create_subscription(msg_type, s.input_topic, self._on_image, qos)]

    def _subscribe_navigation(self, s: NodeSettings, qos: QoSProfile) -> list[Any]:
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
        """Called by the worker for every result (also the flush at deactivate and shutdown)."""
        assert self.pipeline is not None
        self.pubs["detections"].publish(detections_to_msg(self.factory, out.detections, out.header))
        overlay = out.overlay is not None and self.pipeline.config.overlay
        if out.overlay is not None and overlay:
            self.pubs["overlay"].publish(encode_image(self.factory, out.overlay, out.header, "bgr8"))
        if "annotations" in self.pubs and self.annotations_on:
            if self.pipeline.config.input_mode == "frames" and out.shape != (0, 0):
                self.pubs["annotations"].publish(image_annotations_msg(self.factory, out.detections, out.header))
            elif overlay:  # a ping stream: the boxes on the ~/overlay waterfall
                self.pubs["annotations"].publish(image_annotations_msg(self.factory, out.overlay_detections, out.header))
        if self.fusion is not None:
            width = out.shape[1] or self.pipeline.stream_width
            if self.fusion.add_detections(out.detections, stamp_ns(out.header), width):
                self._publish_contacts(out.header)
            if self.fusion.journal_failures > self._journal_failures_logged:
                self._journal_failures_logged = self.fusion.journal_failures
                self.get_logger().warning(self.fusion.journal_error)

    def _publish_contacts(self, header: Any) -> None:
        assert self.fusion is not None
        contacts = self.fusion.contacts()
        self.pubs["contacts"].publish(contacts_map_msg(self.factory, contacts, header))
        if "contacts_geojson" in self.pubs:
            text = contacts_geojson_text(contacts, self.fusion.track_fixes())
            self.pubs["contacts_geojson"].publish(self.factory.make("foxglove_msgs/msg/GeoJSON", geojson=text))

    def _publish_label_info(self) -> None:
        assert self.pipeline is not None
        header = self.factory.header(self.get_clock().now().nanoseconds, "")
        self.pubs["label_info"].publish(label_info_msg(self.factory, self.pipeline.class_names, header,
                                                       self.pipeline.thresholds.lowest))

    def _publish_diagnostics(self) -> None:
        values = {"lifecycle state": self.state_label}
        hardware = ""
        if self.pipeline is None or self.worker is None:
            level, summary = (ERROR, f"configure failed: {self.configure_error}") if self.configure_error else (
                OK, "unconfigured: no model loaded")
        else:
            level, summary, health = self.health.assess(self.pipeline, self.queue, self.worker,
                                                        paused=self.state_label != "active")
            values.update(health)
            values.update(self.fusion.diagnostics() if self.fusion is not None else
                          {"positions": "unavailable (no fix_topic: detections are not georeferenced)"})
            if self.settings is not None and self.settings.input_type in DRIVER_INPUT_TYPES:
                values.update(driver_diagnostics(self.assembler))
            hardware = self.pipeline.classifier.device_name
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.get_name()}: detector", message=summary,
                                  hardware_id=hardware, values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        thresholds = None
        try:
            for p in params:
                value = list(p.value or []) if p.name == "thresholds" else p.value
                check_value(p.name, value)
                if PARAMS_BY_NAME[p.name].read_only and self.state_label != "unconfigured":
                    raise ParameterError(f"{p.name}: applies at configure; set it while the node is unconfigured "
                                         f"(now {self.state_label}: deactivate and clean up first)")
                if p.name == "thresholds" and self.pipeline is not None and self.settings is not None:
                    thresholds = thresholds_in_force(self.pipeline.class_names, value, self.operating_point,
                                                     self.settings.model_path)
        except MineJepaError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for p in params:
            if self.pipeline is None or self.worker is None:
                continue  # read again at configure
            if p.name == "thresholds" and thresholds is not None:
                self.worker.update(partial(DetectionPipeline.set_thresholds, thresholds=thresholds))
                if self.state_label == "active":
                    self._publish_label_info()
            elif p.name == "publish_overlay":
                self.worker.update(partial(DetectionPipeline.set_overlay, on=bool(p.value)))
            elif p.name == "publish_annotations":
                self.annotations_on = bool(p.value)
        return SetParametersResult(successful=True)

    def shutdown(self) -> None:
        """In any state: stop taking input; while the context is valid, process what is queued, publish
        what the open ping stream still holds and wait for it to be acknowledged."""
        was = self.state_label
        if was == "finalized":
            return
        if was == "active":
            self._stop_input()
        self.state_label = "finalized"
        if self.pipeline is None:
            self.get_logger().info(f"stopped ({was})")
            return
        d = self.pipeline.stats
        self.get_logger().info(f"stopped ({was}): {d.received} received, {d.processed} processed, {d.skipped} skipped, "
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
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                print(f"mine_jepa_node: error: {node.configure_error or 'configure failed'}", file=sys.stderr)
                return 2
            node.trigger_activate()
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
