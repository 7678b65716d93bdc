"""`mine-jepa review`: one MCAP for Foxglove, checked with independent readers (the `mcap` library
with `mcap-ros2-support`'s decoder, and rosbags), from a model and from a bag recorded from the node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.geo.formats import read_geojson_points
from mine_jepa_ros.io.messages import stamp_ns, typestore_for
from mine_jepa_ros.sim.mission import MissionConfig, write_mission_bag
from mine_jepa_ros.sim.survey import SurveyConfig

mcap_reader = pytest.importorskip("mcap.reader", reason="mcap not installed (the test extra has it)")
mcap_ros2 = pytest.importorskip("mcap_ros2.decoder", reason="mcap-ros2-support not installed (the test extra has it)")

pytestmark = pytest.mark.slow  # a model over a two-line mission


@pytest.fixture(scope="module")
def mission(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sonar = SurveyConfig(pings=1, samples_per_side=128, max_range_m=12.0, altitude_m=2.0, ping_rate_hz=20.0,
                         milco_count=0, nombo_count=0)
    cfg = MissionConfig(lines=2, line_spacing_m=20.0, line_length_m=40.0, milco_count=2, nombo_count=2, sonar=sonar, seed=4)
    bag, _objects, _lines = write_mission_bag(cfg, tmp_path_factory.mktemp("review") / "mission")
    return bag


def decoded(path: Path) -> dict[str, list[Any]]:
    """Every message of the MCAP by topic, decoded by mcap-ros2-support from the file's own schemas."""
    out: dict[str, list[Any]] = {}
    with open(path, "rb") as f:
        reader = mcap_reader.make_reader(f, decoder_factories=[mcap_ros2.DecoderFactory()])
        summary = reader.get_summary()
        assert summary is not None
        assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
        assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
        for _schema, channel, message, msg in reader.iter_decoded_messages():
            assert message.log_time > 0
            out.setdefault(channel.topic, []).append(msg)
    return out


def with_rosbags(path: Path) -> dict[str, int]:
    """Message counts by topic, every message deserialised by rosbags (its Reader opens a bare .mcap)."""
    from rosbags.rosbag2 import Reader

    store = typestore_for("jazzy")
    counts: dict[str, int] = {}
    with Reader(path) as reader:
        for connection, _t, raw in reader.messages():
            store.deserialize_cdr(raw, connection.msgtype)
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
    return counts


def test_review_from_a_model_and_from_the_nodes_bag(tmp_path: Path, mission: Path, busy_checkpoint: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "review.mcap"
    args = ["review", "--bag", str(mission), "--model", str(busy_checkpoint), "--out", str(out), "--thresholds", "0.34",
            "--device", "cpu", "--precision", "fp32", "--rows-per-frame", "128"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    msgs = decoded(out)
    assert set(msgs) == {"/review/waterfall", "/review/annotations", "/review/fix", "/review/contacts_geojson"}
    assert with_rosbags(out) == {topic: len(v) for topic, v in msgs.items()}
    images, annotations = msgs["/review/waterfall"], msgs["/review/annotations"]
    assert len(images) == len(annotations) > 4
    assert all(im.encoding == "mono8" and im.height <= 128 and im.width == 256 for im in images)
    assert all(im.height == 128 for im in images[:-1])
    # each annotation set sits on its image's stamp; each box's centre ping lies in its image
    for im, ann in zip(images, annotations):
        for pts in ann.points:
            assert (pts.timestamp.sec, pts.timestamp.nanosec) == (im.header.stamp.sec, im.header.stamp.nanosec)
            assert len(pts.points) == 4 and pts.type == 2
            ys = [p.y for p in pts.points]
            assert 0 <= (min(ys) + max(ys)) / 2 <= im.height and all(0 <= p.x <= im.width for p in pts.points)
        assert len(ann.texts) == len(ann.points)
    drawn = sum(len(a.points) for a in annotations)
    assert f"{drawn} detection(s) from model" in printed, printed
    assert drawn > 10, "too few detections for the test to bite"

    # the same from a bag recorded from the node: its inputs, its ~/detections and navigation
    replayed = tmp_path / "replayed"
    contacts = tmp_path / "contacts.geojson"
    assert main(["replay", "--bag", str(mission), "--model", str(busy_checkpoint), "--out", str(replayed), "--thresholds",
                 "0.34", "--device", "cpu", "--precision", "fp32", "--contacts", str(contacts)]) == 0
    node_bag = tmp_path / "node_bag"
    _merge(mission, replayed, node_bag)
    out2 = tmp_path / "from_node.mcap"
    assert main(["review", "--bag", str(node_bag), "--detections-topic", "/mine_jepa_node/detections", "--out", str(out2),
                 "--rows-per-frame", "128"]) == 0
    msgs2 = decoded(out2)
    assert [len(a.points) for a in msgs2["/review/annotations"]] == [len(a.points) for a in annotations]
    final = json.loads(msgs2["/review/contacts_geojson"][-1].geojson)
    points = [f for f in final["features"] if f["geometry"]["type"] == "Point"]
    assert sorted(f["properties"]["id"] for f in points) == sorted(p["id"] for _la, _lo, p in read_geojson_points(contacts))
    assert [f for f in final["features"] if f["geometry"]["type"] == "LineString"]
    assert stamp_ns(msgs2["/review/fix"][0].header) == stamp_ns(msgs["/review/fix"][0].header)

    assert main(args) == 2  # the output exists: refused, not overwritten
    assert "exists already" in capsys.readouterr().err


def _merge(mission: Path, replayed: Path, out: Path) -> None:
    """The mission's messages plus the replay's detections as the node's ~/detections: a node's bag."""
    from rosbags.rosbag2 import Reader, Writer

    store = typestore_for("jazzy")
    with Writer(out, version=9) as writer:
        conns: dict[tuple[str, str], Any] = {}
        for bag, rename in ((mission, {}), (replayed, {"/mine_jepa/detections": "/mine_jepa_node/detections"})):
            with Reader(bag) as reader:
                for connection, t, raw in reader.messages():
                    if bag == replayed and connection.msgtype != "vision_msgs/msg/Detection2DArray":
                        continue
                    topic = rename.get(connection.topic, connection.topic)
                    key = (topic, connection.msgtype)
                    if key not in conns:
                        conns[key] = writer.add_connection(topic, connection.msgtype, typestore=store)
                    writer.write(conns[key], t, raw)


def test_review_refuses_a_name_that_is_not_mcap(tmp_path: Path, mission: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "--bag", str(mission), "--out", str(tmp_path / "review.bag")]) == 2
    assert "*.mcap" in capsys.readouterr().err
    assert not (tmp_path / "review.bag").exists()


def test_review_of_a_survey_without_navigation_has_no_track_and_says_so(tmp_path: Path, busy_checkpoint: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / "survey"
    assert main(["simulate", "--out", str(bag), "--mode", "pings", "--pings", "300", "--samples-per-side", "128"]) == 0
    out = tmp_path / "survey.mcap"
    assert main(["review", "--bag", str(bag), "--model", str(busy_checkpoint), "--out", str(out), "--thresholds", "0.34",
                 "--device", "cpu", "--precision", "fp32"]) == 0
    assert "no navigation fix in the bag" in capsys.readouterr().out
    msgs = decoded(out)
    assert set(msgs) == {"/review/waterfall", "/review/annotations"} and len(msgs["/review/waterfall"]) == 2
