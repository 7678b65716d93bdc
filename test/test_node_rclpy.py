"""mine_jepa_node under real rclpy (ROS 2 wheels from PyPI): topics, QoS, parameters, drops, shutdown.

The node runs in a subprocess, as `ros2 run` would start it; this test process talks to it over
DDS on an isolated domain (localhost only, a domain id unique to this run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make test installs the ROS 2 wheels)")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built (python -m mine_jepa_ros.interfaces.build)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: E402

from mine_jepa_ros.io.image_codec import encode_image  # noqa: E402
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # subprocess nodes talking DDS

DOMAIN = 10 + os.getpid() % 90
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
FACTORY = MessageFactory.for_rclpy()


@pytest.fixture(scope="module")
def ros_node() -> Iterator[rclpy.node.Node]:
    os.environ["ROS_DOMAIN_ID"] = str(DOMAIN)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    rclpy.init()
    node = rclpy.create_node("mine_jepa_test_peer")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def spin_until(node: rclpy.node.Node, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        if condition():
            return True
    return False


def start_node(tmp_path: Path, name: str, checkpoint: Path, **params: object) -> subprocess.Popen[str]:
    values = {"model_path": str(checkpoint), "device": "cpu", "diagnostics_period": 0.5, **params}
    lines = [f"/{name}:", "  ros__parameters:"]
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else (f'"{value}"' if isinstance(value, (str, Path)) else str(value))
        lines.append(f"    {key}: {text}")
    yaml = tmp_path / f"{name}.yaml"
    yaml.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "mine_jepa_ros.ros.node", "--ros-args", "-r", f"__node:={name}",
                             "--params-file", str(yaml)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return -9, out
    return proc.returncode, out


def image(pixels: np.ndarray, t: int) -> Image:
    return encode_image(FACTORY, pixels, FACTORY.header(t, "sidescan"))


@pytest.fixture(scope="module")
def frames_node(tmp_path_factory: pytest.TempPathFactory, busy_checkpoint: Path, ros_node: rclpy.node.Node) -> Iterator[dict]:  # type: ignore[type-arg]
    proc = start_node(tmp_path_factory.mktemp("ros"), "sss_frames", busy_checkpoint, publish_overlay=True,
                      thresholds=[0.34], queue_depth=1, input_topic="/t/frames")
    got: dict[str, list] = {"det": [], "label": [], "overlay": [], "diag": []}  # type: ignore[type-arg]
    subs = [
        ros_node.create_subscription(Detection2DArray, "/sss_frames/detections", got["det"].append, RELIABLE),
        ros_node.create_subscription(LabelInfo, "/sss_frames/label_info", got["label"].append, LATCHED),
        ros_node.create_subscription(Image, "/sss_frames/overlay", got["overlay"].append, RELIABLE),
        ros_node.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10),
    ]
    pub = ros_node.create_publisher(Image, "/t/frames", 10)
    ready = spin_until(ros_node, lambda: bool(got["label"]) and pub.get_subscription_count() > 0, 60)
    if not ready:
        proc.kill()
        pytest.fail(f"node did not come up: {proc.communicate()[0]}")
    yield {"proc": proc, "got": got, "pub": pub}
    for sub in subs:
        ros_node.destroy_subscription(sub)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_frames_in_detections_out_with_the_input_headers(frames_node: dict, ros_node: rclpy.node.Node) -> None:  # type: ignore[type-arg]
    got, pub = frames_node["got"], frames_node["pub"]
    label = got["label"][0]
    assert [c.class_name for c in label.class_map] == ["background", "MILCO", "NOMBO"]
    assert label.threshold == pytest.approx(0.34)
    rng = np.random.default_rng(0)
    stamps = [1_700_000_000_000_000_000 + i * 10**9 for i in range(3)]
    for t in stamps:
        pub.publish(image(rng.integers(0, 256, (192, 320), dtype=np.uint8), t))
        assert spin_until(ros_node, lambda t=t: any(stamp_ns(d.header) == t for d in got["det"]), 30)
    received = {stamp_ns(d.header): d for d in got["det"]}
    for t in stamps:
        assert received[t].header.frame_id == "sidescan"
        for det in received[t].detections:
            assert det.results[0].hypothesis.class_id in ("MILCO", "NOMBO")
    assert spin_until(ros_node, lambda: len(got["overlay"]) >= 3, 10)
    assert got["overlay"][-1].encoding == "bgr8" and got["overlay"][-1].width == 320


def test_bad_input_is_counted_and_good_input_still_flows(frames_node: dict, ros_node: rclpy.node.Node) -> None:  # type: ignore[type-arg]
    got, pub = frames_node["got"], frames_node["pub"]
    bad = image(np.zeros((192, 320), np.uint8), 5)
    bad.encoding = "yuv422"
    pub.publish(bad)
    time.sleep(0.3)
    pub.publish(image(np.zeros((40, 40), np.uint8), 6))  # smaller than a window
    time.sleep(0.3)
    pub.publish(image(np.zeros((192, 320), np.uint8), 7))
    assert spin_until(ros_node, lambda: any(stamp_ns(d.header) == 7 for d in got["det"]), 30)

    def skipped_two() -> bool:
        for arr in got["diag"]:
            values = {kv.key: kv.value for kv in arr.status[0].values}
            if values.get("skipped") == "2":
                return values["skipped[field encoding]"] == "1" and values["skipped[size]"] == "1"
        return False

    assert spin_until(ros_node, skipped_two, 10)
    assert frames_node["proc"].poll() is None
    values = {kv.key: kv.value for kv in got["diag"][-1].status[0].values}
    assert values["positions"].startswith("unavailable (no fix_topic")  # no navigation: pixels only, and it says so


def test_parameters_are_validated_by_the_real_parameter_services(frames_node: dict, ros_node: rclpy.node.Node) -> None:  # type: ignore[type-arg]
    client = AsyncParameterClient(ros_node, "sss_frames")
    assert client.wait_for_services(timeout_sec=10)

    def set_params(*params: Parameter) -> list:  # type: ignore[type-arg]
        future = client.set_parameters(list(params))
        assert spin_until(ros_node, future.done, 10)
        return future.result().results

    bad = set_params(Parameter("thresholds", value=[2.0]))[0]
    assert not bad.successful and "thresholds" in bad.reason
    read_only = set_params(Parameter("batch_size", value=8))[0]
    assert not read_only.successful
    got = frames_node["got"]
    ok = set_params(Parameter("thresholds", value=[0.4, 0.6]))[0]
    assert ok.successful
    assert spin_until(ros_node, lambda: got["label"][-1].threshold == pytest.approx(0.4), 10)
    future = client.get_parameters(["thresholds"])
    assert spin_until(ros_node, future.done, 10)
    assert list(future.result().values[0].double_array_value) == [0.4, 0.6]


def test_a_flood_drops_stale_frames_and_keeps_latency_bounded(frames_node: dict, ros_node: rclpy.node.Node) -> None:  # type: ignore[type-arg]
    got, pub = frames_node["got"], frames_node["pub"]
    before = len(got["det"])
    big = np.random.default_rng(1).integers(0, 256, (256, 1024), dtype=np.uint8)  # 45 windows: ~0.2 s each
    sent = [10**12 + i for i in range(25)]
    for t in sent:  # 50 frames/s: far faster than inference on this CPU
        pub.publish(image(big, t))
        rclpy.spin_once(ros_node, timeout_sec=0.02)

    def counters() -> dict[str, float]:
        values = {kv.key: kv.value for kv in got["diag"][-1].status[0].values}
        return {k: float(values[k]) for k in ("dropped", "received", "published", "queued", "max_latency_s")}

    def settled() -> bool:
        count = len(got["det"])
        spin_until(ros_node, lambda: False, 1.5)
        return len(got["det"]) == count and counters()["queued"] == 0

    spin_until(ros_node, lambda: any(stamp_ns(d.header) == sent[-1] for d in got["det"][before:]), 30)
    assert spin_until(ros_node, settled, 60)
    processed = [stamp_ns(d.header) for d in got["det"][before:]]
    c = counters()
    assert 0 < len(processed) < len(sent)  # the node did not queue the flood
    # Stale frames were dropped by the node's queue (counted) or, before it, by best-effort DDS.
    assert c["dropped"] + len(processed) <= len(sent)
    assert processed == sorted(processed)  # order kept
    assert c["max_latency_s"] < 10.0  # queue depth 1: latency stays about one inference long


def test_sigint_shuts_down_cleanly(frames_node: dict) -> None:  # type: ignore[type-arg]
    code, out = stop(frames_node["proc"])
    assert code == 0, out
    assert "Traceback" not in out


def test_ping_rows_make_detections_stamped_like_their_pings(tmp_path: Path, busy_checkpoint: Path, ros_node: rclpy.node.Node,
                                                            narrow_survey) -> None:  # type: ignore[no-untyped-def]
    proc = start_node(tmp_path, "sss_pings", busy_checkpoint, input_mode="pings", thresholds=[0.34],
                      queue_depth=1000, input_topic="/t/pings")
    arrays: list = []  # type: ignore[type-arg]
    sub = ros_node.create_subscription(Detection2DArray, "/sss_pings/detections", arrays.append, RELIABLE)
    pub = ros_node.create_publisher(Image, "/t/pings", QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    try:
        assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 60)
        time.sleep(0.5)
        rows = narrow_survey.to_uint8()[:300]
        stamps = narrow_survey.ping_stamps_ns()[:300]
        for row, t in zip(rows, stamps):  # 200 pings/s, ten times a real sonar's rate
            pub.publish(image(row[None], int(t)))
            rclpy.spin_once(ros_node, timeout_sec=0.005)
        assert spin_until(ros_node, lambda: len(arrays) >= 300, 60), f"{len(arrays)} arrays"
        assert {stamp_ns(a.header) for a in arrays} <= set(int(t) for t in stamps)
        dets = [d for a in arrays for d in a.detections]
        assert dets, "no detection from 300 pings"
        for d in dets:
            centre_row = int(d.bbox.center.position.y)
            assert stamp_ns(d.header) == stamps[centre_row]
    finally:
        ros_node.destroy_subscription(sub)
        code, out = stop(proc)
    assert code == 0, out


@pytest.mark.parametrize("head", ["window", "dense"])
def test_sigint_while_streaming_publishes_the_last_windows_without_a_traceback(
        tmp_path: Path, head: str, request: pytest.FixtureRequest, ros_node: rclpy.node.Node,
        narrow_survey) -> None:  # type: ignore[no-untyped-def]
    """The final flush (the border-aligned last windows and every open detection) is published and
    acknowledged before the context shuts down: the node's output equals the offline pipeline's,
    with the window head and with the dense head (peak finding on token maps)."""
    from mine_jepa_ros.detect.classifier import PatchClassifier
    from mine_jepa_ros.detect.model import load_checkpoint
    from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig

    busy_checkpoint = request.getfixturevalue("busy_checkpoint" if head == "window" else "busy_dense_checkpoint")
    name = f"sss_stop_{head}"
    proc = start_node(tmp_path, name, busy_checkpoint, input_mode="pings", thresholds=[0.34], precision="fp32",
                      queue_depth=1000, input_topic=f"/t/stop_{head}")
    deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    arrays: list = []  # type: ignore[type-arg]
    diag: list = []  # type: ignore[type-arg]
    subs = [ros_node.create_subscription(Detection2DArray, f"/{name}/detections", arrays.append, deep),
            ros_node.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 100)]
    pub = ros_node.create_publisher(Image, f"/t/stop_{head}", deep)
    rows, stamps = narrow_survey.to_uint8()[:200], narrow_survey.ping_stamps_ns()[:200]
    pings = [image(row[None], int(t)) for row, t in zip(rows, stamps)]

    def received(n: int) -> bool:
        for array in diag:
            for status in array.status:
                values = {kv.key: kv.value for kv in status.values}
                if name in status.name and values.get("received") == str(n):
                    return True
        return False

    try:
        assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 60)
        time.sleep(0.5)
        for msg in pings:
            pub.publish(msg)
        assert spin_until(ros_node, lambda: received(len(pings)), 60), "the node did not receive every ping"
    finally:
        code, out = stop(proc)  # at once: pings still queued, the stream's last windows not yet out
    spin_until(ros_node, lambda: False, 1.5)
    for sub in subs:
        ros_node.destroy_subscription(sub)
    assert code == 0, out
    assert "Traceback" not in out and "Failed to publish" not in out, out
    assert "stopped (active): 200 received, 200 processed" in out and "not acknowledged" not in out, out

    offline = DetectionPipeline(PatchClassifier(load_checkpoint(busy_checkpoint), device="cpu", precision="fp32"),
                                PipelineConfig("pings", thresholds=0.34))
    expected = [d for msg in pings for d in offline.process(msg).detections]  # type: ignore[union-attr]
    flushed = offline.flush()
    assert flushed is not None and flushed.detections, "nothing left for the final flush: the test would not bite"
    expected += flushed.detections

    def key(d) -> tuple:  # type: ignore[no-untyped-def, type-arg]
        return (d.results[0].hypothesis.class_id, round(d.bbox.center.position.x, 3), round(d.bbox.center.position.y, 3))

    got = sorted(key(d) for a in arrays for d in a.detections)
    want = sorted((e.class_name, round((e.box[1] + e.box[3]) / 2, 3), round((e.box[0] + e.box[2]) / 2, 3)) for e in expected)
    assert got == want


def test_without_thresholds_the_node_runs_at_the_checkpoints_operating_point(
        tmp_path: Path, busy_checkpoint: Path, ros_node: rclpy.node.Node) -> None:
    from dataclasses import replace

    from mine_jepa_ros.detect.model import load_checkpoint, save_checkpoint

    model = load_checkpoint(busy_checkpoint)
    model.metadata = replace(model.metadata, operating_point={"temperature": 1.3, "thresholds": {"MILCO": 0.61, "NOMBO": 0.72}})
    calibrated = save_checkpoint(tmp_path / "calibrated.safetensors", model)
    proc = start_node(tmp_path, "sss_op", calibrated, input_topic="/t/op")
    labels: list = []  # type: ignore[type-arg]
    sub = ros_node.create_subscription(LabelInfo, "/sss_op/label_info", labels.append, LATCHED)
    try:
        assert spin_until(ros_node, lambda: bool(labels), 60)
        assert labels[-1].threshold == pytest.approx(0.61)  # the lower of the two in force
    finally:
        ros_node.destroy_subscription(sub)
        code, out = stop(proc)
    assert code == 0, out
    # a checkpoint without an operating point needs thresholds: one line, naming the parameter
    proc = start_node(tmp_path, "sss_no_op", busy_checkpoint, input_topic="/t/no_op")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "thresholds" in out and "no operating point" in out and "Traceback" not in out


def test_large_frames_arrive_over_a_reliable_input(tmp_path: Path, busy_checkpoint: Path, ros_node: rclpy.node.Node) -> None:
    """256 x 2048 mono8 frames (512 KB): best effort loses them between processes here (their
    fragments overflow the transport's buffers); input_reliability reliable has them resent."""
    proc = start_node(tmp_path, "sss_large", busy_checkpoint, input_topic="/t/large", thresholds=[0.34],
                      input_reliability="reliable")
    got: list = []  # type: ignore[type-arg]
    sub = ros_node.create_subscription(Detection2DArray, "/sss_large/detections", got.append, RELIABLE)
    pub = ros_node.create_publisher(Image, "/t/large", RELIABLE)
    try:
        assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 60)
        rng = np.random.default_rng(1)
        stamps = [1_700_000_100_000_000_000 + i * 10**9 for i in range(3)]
        for t in stamps:  # one at a time: the node's queue holds 2 frames and drops the oldest
            pub.publish(image(rng.integers(0, 256, (256, 2048), dtype=np.uint8), t))
            assert spin_until(ros_node, lambda t=t: any(stamp_ns(d.header) == t for d in got), 60), f"no detections for {t}"
    finally:
        ros_node.destroy_subscription(sub)
        ros_node.destroy_publisher(pub)
        code, out = stop(proc)
    assert code == 0 and "3 received, 3 processed" in out, out


def test_missing_model_is_a_one_line_error(tmp_path: Path) -> None:
    proc = start_node(tmp_path, "sss_bad", tmp_path / "absent.safetensors")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "absent.safetensors" in out and "Traceback" not in out


def test_driver_pings_and_navigation_make_contacts_that_agree_with_replay(
        tmp_path: Path, busy_checkpoint: Path, ros_node: rclpy.node.Node) -> None:
    """A Garmin-like driver (RawSonarImage per channel) and navigation topics in; the node's
    ~/contacts GeographicMap equals `replay --contacts` on the same mission."""
    pytest.importorskip("geographic_msgs.msg", reason="geographic_msgs not built (python -m mine_jepa_ros.interfaces.build)")
    from geographic_msgs.msg import GeographicMap
    from geometry_msgs.msg import QuaternionStamped
    from marine_acoustic_msgs.msg import RawSonarImage
    from sensor_msgs.msg import NavSatFix, Range

    from mine_jepa_ros.detect.backends import DetectorOptions
    from mine_jepa_ros.evaluate.replay import ReplayOptions, replay
    from mine_jepa_ros.geo.formats import read_geojson_points
    from mine_jepa_ros.io.bag import ReadStats, iter_messages
    from mine_jepa_ros.io.image_codec import decode_image
    from mine_jepa_ros.io.navigation import NAV_TYPES, altitude_msg, fix_msg, heading_msg, nav_sample
    from mine_jepa_ros.io.sonar_drivers import raw_sonar_image_msg
    from mine_jepa_ros.sim.mission import MissionConfig, write_mission_bag
    from mine_jepa_ros.sim.survey import SurveyConfig

    sonar = SurveyConfig(pings=1, samples_per_side=128, max_range_m=12.0, altitude_m=2.0, ping_rate_hz=20.0,
                         milco_count=0, nombo_count=0)
    cfg = MissionConfig(lines=2, line_spacing_m=20.0, line_length_m=40.0, milco_count=2, nombo_count=2, sonar=sonar, seed=4)
    bag, _objects, _lines = write_mission_bag(cfg, tmp_path / "mission")
    replay(bag, busy_checkpoint, tmp_path / "out",
           ReplayOptions(detector=DetectorOptions(thresholds=0.34, precision="fp32"), contacts=tmp_path / "c.geojson",
                         progress=False))
    expected = sorted((p["class"], round(lat, 7), round(lon, 7), p["looks"]) for lat, lon, p in read_geojson_points(tmp_path / "c.geojson"))
    assert expected, "the replay found no contact: the test would not bite"

    proc = start_node(tmp_path, "sss_nav", busy_checkpoint, input_mode="pings", input_type="raw_sonar_image",
                      port_topic="/t/port", starboard_topic="/t/starboard", fix_topic="/t/fix", heading_topic="/t/heading",
                      altitude_topic="/t/altitude", thresholds=[0.34], precision="fp32", queue_depth=5000,
                      slant_resolution_m=sonar.slant_resolution_m, altitude_m=sonar.altitude_m,
                      ping_spacing_m=cfg.ping_spacing_m)
    maps: list = []  # type: ignore[type-arg]
    deep = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE)
    sub = ros_node.create_subscription(GeographicMap, "/sss_nav/contacts", maps.append, LATCHED)
    pubs = {name: ros_node.create_publisher(cls, f"/t/{name}", deep) for name, cls in
            (("port", RawSonarImage), ("starboard", RawSonarImage), ("fix", NavSatFix), ("heading", QuaternionStamped),
             ("altitude", Range))}
    try:
        assert spin_until(ros_node, lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 60)
        time.sleep(0.5)
        for topic, _i, _t, msg in iter_messages(bag, None, NAV_TYPES, ReadStats()):
            s = nav_sample(msg, {"/nav/fix": NAV_TYPES[0], "/nav/heading": NAV_TYPES[1], "/nav/altitude": NAV_TYPES[4]}[topic])
            if s.kind == "fix":
                pubs["fix"].publish(fix_msg(FACTORY, s.stamp_ns, "gps", *s.values))
            elif s.kind == "heading":
                pubs["heading"].publish(heading_msg(FACTORY, s.stamp_ns, "base_link", s.values[0]))
            else:
                pubs["altitude"].publish(altitude_msg(FACTORY, s.stamp_ns, "altimeter", s.values[0]))
        spin_until(ros_node, lambda: False, 1.0)
        s = sonar.samples_per_side
        for _topic, _i, _t, msg in iter_messages(bag, ["/sonar/sidescan/image"], ("sensor_msgs/msg/Image",), ReadStats()):
            row = (decode_image(msg).pixels[0] * 255 + 0.5).astype(np.uint8)
            header = FACTORY.header(stamp_ns(msg.header), "sidescan")
            pubs["port"].publish(raw_sonar_image_msg(FACTORY, header, np.ascontiguousarray(row[:s][::-1]), sonar.slant_resolution_m))
            pubs["starboard"].publish(raw_sonar_image_msg(FACTORY, header, np.ascontiguousarray(row[s:]), sonar.slant_resolution_m))
            rclpy.spin_once(ros_node, timeout_sec=0.001)

        def got() -> list:  # type: ignore[type-arg]
            if not maps:
                return []
            return sorted((next(kv.value for kv in p.props if kv.key == "class"), round(p.position.latitude, 7),
                           round(p.position.longitude, 7), int(next(kv.value for kv in p.props if kv.key == "looks")))
                          for p in maps[-1].points)

        spin_until(ros_node, lambda: got() == expected, 60)
    finally:
        code, out = stop(proc)
        spin_until(ros_node, lambda: False, 1.0)
        ros_node.destroy_subscription(sub)
    assert code == 0 and "Traceback" not in out, out
    assert got() == expected, out
