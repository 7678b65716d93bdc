"""The managed node under real rclpy: lifecycle services, Foxglove topics, contacts across a SIGKILL.

As in test_node_rclpy, the node runs in a subprocess (as `ros2 run` starts it) and this process is
the sonar driver and the autonomy stack: it publishes pings, navigation and frames, and drives the
node through the ``lifecycle_msgs`` services (ChangeState, GetState) as a lifecycle manager does.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make test installs the ROS 2 wheels)")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built (python -m mine_jepa_ros.interfaces.build)")
pytest.importorskip("foxglove_msgs.msg", reason="foxglove_msgs not built (python -m mine_jepa_ros.interfaces.build)")
pytest.importorskip("rclpy.lifecycle", reason="this rclpy has no lifecycle module")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from foxglove_msgs.msg import GeoJSON, ImageAnnotations  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
import test_node_rclpy  # noqa: E402
from test_node_rclpy import FACTORY, LATCHED, RELIABLE, image, spin_until, start_node, stop  # noqa: E402
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: E402

from mine_jepa_ros.io.messages import stamp_ns  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ros_node = test_node_rclpy.ros_node  # this process's rclpy node: the lifecycle manager and the drivers


class Lifecycle:
    """A lifecycle manager's view of one node: its ChangeState and GetState services."""

    def __init__(self, node: Any, name: str) -> None:
        self.node = node
        self.change = node.create_client(ChangeState, f"/{name}/change_state")
        self.get = node.create_client(GetState, f"/{name}/get_state")
        assert self.change.wait_for_service(timeout_sec=60) and self.get.wait_for_service(timeout_sec=10)

    def set(self, label: str) -> bool:
        request = ChangeState.Request()
        request.transition.label = label
        future = self.change.call_async(request)
        assert spin_until(self.node, future.done, 90), f"no answer to {label}"
        return bool(future.result().success)

    def state(self) -> str:
        future = self.get.call_async(GetState.Request())
        assert spin_until(self.node, future.done, 10)
        return str(future.result().current_state.label)


def diag_of(arrays: list[Any], name: str) -> tuple[str, dict[str, str]]:
    """The last (summary, values) the node ``name`` sent on /diagnostics."""
    for array in reversed(arrays):
        for status in array.status:
            if status.name.startswith(f"{name}:"):
                return status.message, {kv.key: kv.value for kv in status.values}
    return "", {}


def test_configure_activate_deactivate_through_the_lifecycle_services(
        tmp_path: Path, busy_checkpoint: Path, ros_node: Any) -> None:
    name = "sss_lc"
    proc = start_node(tmp_path, name, busy_checkpoint, autostart=False, thresholds=[0.34], input_topic="/t/lc")
    got: dict[str, list[Any]] = {"det": [], "ann": [], "label": [], "diag": []}
    subs = [ros_node.create_subscription(Detection2DArray, f"/{name}/detections", got["det"].append, RELIABLE),
            ros_node.create_subscription(ImageAnnotations, f"/{name}/annotations", got["ann"].append, RELIABLE),
            ros_node.create_subscription(LabelInfo, f"/{name}/label_info", got["label"].append, LATCHED),
            ros_node.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 50)]
    pub = ros_node.create_publisher(Image, "/t/lc", 10)
    rng = np.random.default_rng(3)

    def frame_answered(t: int, timeout: float = 30.0) -> bool:
        # The frame goes out again every 2 s until it is answered: a publisher can match the new
        # subscription a moment before that subscription matches it back, and a volatile frame sent
        # in that moment is lost (CI saw it once after cleanup and configure).
        frame = image(rng.integers(0, 256, (128, 256), dtype=np.uint8), t)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pub.publish(frame)
            if spin_until(ros_node, lambda: any(stamp_ns(a.header) == t for a in got["det"]),
                          min(2.0, end - time.monotonic())):
                return True
        return False

    try:
        lc = Lifecycle(ros_node, name)
        assert lc.state() == "unconfigured"
        assert spin_until(ros_node, lambda: diag_of(got["diag"], name)[0] == "unconfigured: no model loaded", 20)
        assert lc.set("configure") and lc.state() == "inactive"
        assert spin_until(ros_node, lambda: diag_of(got["diag"], name)[0].startswith("inactive"), 20)
        assert pub.get_subscription_count() == 0  # inactive: no input taken
        assert not got["label"]

        assert lc.set("activate") and lc.state() == "active"
        assert spin_until(ros_node, lambda: bool(got["label"]) and pub.get_subscription_count() > 0, 30)
        t1 = 1_700_000_000_000_000_000
        assert frame_answered(t1)
        def on_t1(a: Any) -> bool:
            return bool(a.points) and (a.points[0].timestamp.sec, a.points[0].timestamp.nanosec) == divmod(t1, 10**9)

        assert spin_until(ros_node, lambda: any(on_t1(a) for a in got["ann"]), 10), "no annotations on the frame's stamp"
        array = next(a for a in got["det"] if stamp_ns(a.header) == t1)
        ann = next(a for a in got["ann"] if on_t1(a))
        assert len(ann.points) == len(ann.texts) == len(array.detections) > 0
        first, box = ann.points[0], array.detections[0].bbox
        xs = sorted({p.x for p in first.points})
        assert xs == pytest.approx([box.center.position.x - box.size_x / 2, box.center.position.x + box.size_x / 2])
        assert ann.texts[0].text.split()[0] == array.detections[0].results[0].hypothesis.class_id

        # a configure-time parameter is refused while configured, with the reason
        client = AsyncParameterClient(ros_node, name)
        assert client.wait_for_services(timeout_sec=10)
        future = client.set_parameters([Parameter("model_path", value=str(tmp_path / "other.onnx"))])
        assert spin_until(ros_node, future.done, 10)
        refused = future.result().results[0]
        assert not refused.successful and "unconfigured" in refused.reason

        assert lc.set("deactivate") and lc.state() == "inactive"
        assert spin_until(ros_node, lambda: pub.get_subscription_count() == 0, 10)
        t2 = t1 + 10**9
        assert not frame_answered(t2, timeout=3.0), "detections while inactive"
        assert lc.set("activate")
        assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 30)
        t3 = t2 + 10**9
        assert frame_answered(t3), "detections did not resume on activate"
        assert not any(stamp_ns(a.header) == t2 for a in got["det"])
        assert lc.set("deactivate") and lc.set("cleanup") and lc.state() == "unconfigured"
        assert spin_until(ros_node, lambda: pub.get_subscription_count() == 0, 10)
        assert lc.set("configure") and lc.set("activate")
        assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 30)
        assert frame_answered(t3 + 10**9), "no detections after cleanup and configure again"
    finally:
        for sub in subs:
            ros_node.destroy_subscription(sub)
        ros_node.destroy_publisher(pub)
        code, out = stop(proc)
    assert code == 0 and "Traceback" not in out, out
    assert "stopped (active)" in out, out


def test_a_bad_model_is_a_failed_configure_not_a_crash(tmp_path: Path, ros_node: Any) -> None:
    name = "sss_lc_bad"
    proc = start_node(tmp_path, name, tmp_path / "absent.safetensors", autostart=False)
    diag: list[Any] = []
    sub = ros_node.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 50)
    try:
        lc = Lifecycle(ros_node, name)
        assert not lc.set("configure")
        assert lc.state() == "unconfigured"
        assert spin_until(ros_node, lambda: "absent.safetensors" in diag_of(diag, name)[0], 20)
        assert diag_of(diag, name)[0].startswith("configure failed: ")
        assert proc.poll() is None  # still running, ready for another configure
    finally:
        ros_node.destroy_subscription(sub)
        code, out = stop(proc)
    assert code == 0 and "Traceback" not in out, out
    failures = [line for line in out.splitlines() if "configure failed" in line]
    assert len(failures) == 1 and "absent.safetensors" in failures[0], out


def _mission(tmp_path: Path) -> tuple[Path, Any, Any, list[Any]]:
    from mine_jepa_ros.sim.mission import MissionConfig, write_mission_bag
    from mine_jepa_ros.sim.survey import SurveyConfig

    sonar = SurveyConfig(pings=1, samples_per_side=128, max_range_m=12.0, altitude_m=2.0, ping_rate_hz=20.0,
                         milco_count=0, nombo_count=0)
    cfg = MissionConfig(lines=2, line_spacing_m=20.0, line_length_m=40.0, milco_count=2, nombo_count=2, sonar=sonar, seed=4)
    bag, _objects, lines = write_mission_bag(cfg, tmp_path / "mission")
    return bag, cfg, sonar, lines


class MissionDriver:
    """The vehicle's drivers: navigation (NavSatFix, heading, altitude) and the side-scan pings."""

    def __init__(self, node: Any, bag: Path, prefix: str) -> None:
        from geometry_msgs.msg import QuaternionStamped
        from sensor_msgs.msg import NavSatFix, Range

        from mine_jepa_ros.io.bag import ReadStats, iter_messages
        from mine_jepa_ros.io.image_codec import decode_image
        from mine_jepa_ros.io.navigation import NAV_TYPES, altitude_msg, fix_msg, heading_msg, nav_sample

        kinds = {"/nav/fix": NAV_TYPES[0], "/nav/heading": NAV_TYPES[1], "/nav/altitude": NAV_TYPES[4]}
        self.nav: list[tuple[str, Any]] = []
        for topic, _i, _t, msg in iter_messages(bag, None, NAV_TYPES, ReadStats()):
            s = nav_sample(msg, kinds[topic])
            if s.kind == "fix":
                self.nav.append(("fix", fix_msg(FACTORY, s.stamp_ns, "gps", *s.values)))
            elif s.kind == "heading":
                self.nav.append(("heading", heading_msg(FACTORY, s.stamp_ns, "base_link", s.values[0])))
            else:
                self.nav.append(("altitude", altitude_msg(FACTORY, s.stamp_ns, "altimeter", s.values[0])))
        self.pings = [image((decode_image(msg).pixels[0] * 255 + 0.5).astype(np.uint8)[None], stamp_ns(msg.header))
                      for _topic, _i, _t, msg in iter_messages(bag, ["/sonar/sidescan/image"], ("sensor_msgs/msg/Image",),
                                                                ReadStats())]
        deep = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.pubs = {name: node.create_publisher(cls, f"/{prefix}/{name}", deep) for name, cls in
                     (("pings", Image), ("fix", NavSatFix), ("heading", QuaternionStamped), ("altitude", Range))}

    def subscribers(self) -> set[bytes]:
        """The endpoint GIDs of every subscription to the drivers' topics (from the ROS graph)."""
        return {bytes(info.endpoint_gid) for pub in self.pubs.values()
                for info in self.node.get_subscriptions_info_by_topic(pub.topic_name)}

    def wait_for(self, timeout: float = 60.0, stale: frozenset[bytes] = frozenset()) -> None:
        """Wait until every topic has a subscriber that is not one of ``stale``: a SIGKILLed
        process's subscriptions stay in the graph (and matched) until its DDS lease expires,
        about 20 s, and messages published meanwhile would reach only the dead process."""
        def live(pub: Any) -> bool:
            infos = self.node.get_subscriptions_info_by_topic(pub.topic_name)
            return pub.get_subscription_count() > 0 and any(bytes(i.endpoint_gid) not in stale for i in infos)

        assert spin_until(self.node, lambda: all(live(p) for p in self.pubs.values()), timeout), \
            f"no live subscriber on {[p.topic_name for p in self.pubs.values() if not live(p)]}"
        spin_until(self.node, lambda: False, 0.5)

    def navigation(self, burst: int = 20) -> None:
        """Publish the mission's navigation, ``burst`` messages at a time with a pause between, as
        drivers at their rates would: by default the node subscribes to navigation best effort
        (sensor data), and hundreds of messages at once overflow its transport's queue (2 of 804
        were lost once); with ``navigation_reliability: reliable`` a whole burst arrives."""
        for i, (kind, msg) in enumerate(self.nav):
            self.pubs[kind].publish(msg)
            if i % burst == burst - 1:
                spin_until(self.node, lambda: False, 0.01)
        spin_until(self.node, lambda: False, 1.0)

    def play(self, pings: list[Any]) -> None:
        for msg in pings:
            self.pubs["pings"].publish(msg)
            rclpy.spin_once(self.node, timeout_sec=0.001)

    def close(self) -> None:
        for pub in self.pubs.values():
            self.node.destroy_publisher(pub)


def _contacts(geo_map: Any) -> list[tuple[str, float, float, int, str]]:
    def prop(point: Any, key: str) -> str:
        return next(kv.value for kv in point.props if kv.key == key)

    return sorted((bytes(p.id.uuid).hex(), p.position.latitude, p.position.longitude, int(prop(p, "looks")), prop(p, "class"))
                  for p in geo_map.points)


def test_contacts_survive_a_sigkill_and_restart(tmp_path: Path, busy_checkpoint: Path, ros_node: Any) -> None:
    """A mission of two lines, the node paused between them by the autonomy stack (deactivate:
    the ping stream is flushed). Uninterrupted: one node process. Interrupted: SIGKILL during the
    turn and a restart with the same contacts_file. The final contacts are the same: count, UUIDs,
    positions (to 1e-7 deg), looks and classes; the restarted node republishes the journaled
    contacts at once, and the Foxglove GeoJSON carries them with their style and the track. The
    uninterrupted node takes navigation reliable (``navigation_reliability``): all of it in one burst."""
    from geographic_msgs.msg import GeographicMap

    bag, cfg, sonar, lines = _mission(tmp_path)
    driver = MissionDriver(ros_node, bag, "k")
    split = lines[1].first_ping
    line1, line2 = driver.pings[:split], driver.pings[split:]
    assert len(line1) > 100 and len(line2) > 100
    params = dict(input_mode="pings", input_topic="/k/pings", fix_topic="/k/fix", heading_topic="/k/heading",
                  altitude_topic="/k/altitude", thresholds=[0.34], precision="fp32", queue_depth=5000,
                  slant_resolution_m=sonar.slant_resolution_m, altitude_m=sonar.altitude_m, ping_spacing_m=cfg.ping_spacing_m)
    maps: dict[str, list[Any]] = {}
    geojson: dict[str, list[Any]] = {}
    diag: list[Any] = []
    subs = [ros_node.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 100)]

    def start(name: str, **extra: object) -> tuple[Any, Lifecycle]:
        """Start the node ``name`` and wait until the drivers reach it, not an earlier process."""
        stale = frozenset(driver.subscribers())  # a SIGKILLed process's stay until its lease expires
        if name not in maps:
            maps[name], geojson[name] = [], []
            subs.append(ros_node.create_subscription(GeographicMap, f"/{name}/contacts", maps[name].append, LATCHED))
            subs.append(ros_node.create_subscription(GeoJSON, f"/{name}/contacts_geojson", geojson[name].append, LATCHED))
        proc = start_node(tmp_path, name, busy_checkpoint, **params, **extra)
        lc = Lifecycle(ros_node, name)
        driver.wait_for(stale=stale)
        return proc, lc

    def navigate(name: str, burst: int = 20) -> None:
        """Publish the mission's navigation and wait until the node ``name`` has counted all of it."""
        driver.navigation(burst)
        assert spin_until(ros_node, lambda: diag_of(diag, name)[1].get("navigation messages") == str(len(driver.nav)), 30), \
            f"{name} counted {diag_of(diag, name)[1].get('navigation messages')} of {len(driver.nav)} navigation messages"

    def survey_line(name: str, lc: Lifecycle, pings: list[Any], received: int) -> list[tuple[str, float, float, int, str]]:
        """Play a line's pings, wait until the node has received them all (its count since start is
        ``received``), pause it (deactivate: the stream is flushed) and return its contacts."""
        driver.play(pings)
        assert spin_until(ros_node, lambda: diag_of(diag, name)[1].get("received") == str(received), 90)
        assert lc.set("deactivate")
        spin_until(ros_node, lambda: False, 1.0)
        return _contacts(maps[name][-1])

    procs = []
    try:
        # uninterrupted; navigation subscribed reliable, so all of it arrives in one burst
        proc, lc = start("sss_whole", navigation_reliability="reliable")
        procs.append(proc)
        navigate("sss_whole", burst=len(driver.nav))
        survey_line("sss_whole", lc, line1, len(line1))
        stale = frozenset(driver.subscribers())  # line 1's subscriptions, destroyed at deactivate
        assert lc.set("activate")
        driver.wait_for(stale=stale)
        whole = survey_line("sss_whole", lc, line2, len(driver.pings))
        code, out = stop(proc)
        assert code == 0 and "Traceback" not in out, out
        assert len(whole) >= 2, "too few contacts for the test to bite"

        # interrupted: SIGKILL in the turn, restart with the same journal
        journal = tmp_path / "contacts.json"
        proc, lc = start("sss_killed", contacts_file=str(journal))
        procs.append(proc)
        navigate("sss_killed")
        before_kill = survey_line("sss_killed", lc, line1, len(line1))
        assert before_kill and set(before_kill) != set(whole), "line 2 changes nothing: the restart would not be tested"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)

        maps["sss_killed"].clear()
        diag.clear()
        proc, lc = start("sss_killed", contacts_file=str(journal))
        procs.append(proc)
        assert spin_until(ros_node, lambda: bool(maps["sss_killed"]), 30), "no contacts republished at start"
        assert _contacts(maps["sss_killed"][-1]) == before_kill
        assert spin_until(ros_node, lambda: "contacts restored" in diag_of(diag, "sss_killed")[1], 20)
        values = diag_of(diag, "sss_killed")[1]
        navigate("sss_killed")
        resumed = survey_line("sss_killed", lc, line2, len(line2))  # the restarted process counts from 0
        text = geojson["sss_killed"][-1].geojson
        code, out = stop(proc)
        assert code == 0 and "Traceback" not in out, out
        assert f"{len(before_kill)} contact(s) restored" in out, out
    finally:
        for sub in subs:
            ros_node.destroy_subscription(sub)
        driver.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()

    assert [c[0] for c in resumed] == [c[0] for c in whole]  # the same UUIDs
    assert [(c[3], c[4]) for c in resumed] == [(c[3], c[4]) for c in whole]  # looks and classes
    np.testing.assert_allclose([c[1:3] for c in resumed], [c[1:3] for c in whole], atol=1e-7, rtol=0)
    assert values.get("contacts restored") == str(len(before_kill))

    features = json.loads(text)["features"]
    points = [f for f in features if f["geometry"]["type"] == "Point"]
    track = [f for f in features if f["geometry"]["type"] == "LineString"]
    assert len(points) == len(resumed) and len(track) == 1
    assert all({"color", "fillColor", "radius"} <= set(f["properties"]["style"]) for f in points)
    assert {f["properties"]["id"].replace("-", "") for f in points} == {c[0] for c in resumed}


def test_a_corrupt_contacts_file_is_one_warning_and_the_node_comes_up(tmp_path: Path, busy_checkpoint: Path,
                                                                      ros_node: Any) -> None:
    name = "sss_lc_journal"
    journal = tmp_path / "contacts.json"
    journal.write_text('{"format": "mine_jepa_ros/contacts-journal", "version": 1, "contacts": [{"id": "a", "sigh')
    proc = start_node(tmp_path, name, busy_checkpoint, thresholds=[0.34], input_mode="pings", input_topic="/t/j",
                      fix_topic="/t/j_fix", contacts_file=str(journal))
    diag: list[Any] = []
    sub = ros_node.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 50)
    try:
        lc = Lifecycle(ros_node, name)
        assert spin_until(ros_node, lambda: lc.state() == "active", 60)
        assert spin_until(ros_node, lambda: diag_of(diag, name)[1].get("contacts restored") == "0", 20)
        assert "starting with no contacts" in diag_of(diag, name)[1]["journal error"]
    finally:
        ros_node.destroy_subscription(sub)
        code, out = stop(proc)
    assert code == 0 and "Traceback" not in out, out
    warnings = [line for line in out.splitlines() if "contacts_file" in line and "WARN" in line]
    assert len(warnings) == 1 and "not JSON" in warnings[0], out
    [aside] = tmp_path.glob("contacts.json.bad-*")
    assert aside.read_text().endswith('"sigh') and not journal.exists()
