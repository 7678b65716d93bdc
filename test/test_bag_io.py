"""rosbag2 round trips with rosbags (both storages, every encoding) and bad bags / bad messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.errors import BagError
from mine_jepa_ros.io.bag import (
    DEFAULT_GT_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    INFO_TOPIC,
    ReadStats,
    atomic_bag_writer,
    iter_images,
    list_topics,
    read_detections,
    read_sonar_info,
)
from mine_jepa_ros.io.image_codec import encode_compressed, encode_image
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns
from mine_jepa_ros.sim import Survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["mono8", "mono16"])
def test_frames_round_trip(tmp_path: Path, small_survey: Survey, storage: str, encoding: str) -> None:
    bag = write_survey_bag(small_survey, tmp_path / "bag", SurveyBagOptions(storage=storage, encoding=encoding, frame_height=100))  # type: ignore[arg-type]
    records = list(iter_images(bag))
    assert [r.pixels.shape[0] for r in records] == [100] * 5 + [12]
    full = small_survey.to_uint8() if encoding == "mono8" else small_survey.to_uint16()
    scale = 255.0 if encoding == "mono8" else 65535.0
    np.testing.assert_array_equal(np.round(np.concatenate([r.pixels for r in records]) * scale), full)
    stamps = [r.stamp_ns for r in records]
    assert stamps == sorted(stamps) and stamps == [r.timestamp_ns for r in records]
    assert all(r.header.frame_id == "sidescan" for r in records)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_pings_round_trip_and_ground_truth(tmp_path: Path, small_survey: Survey, storage: str) -> None:
    bag = write_survey_bag(small_survey, tmp_path / "bag", SurveyBagOptions(storage=storage, mode="pings"))  # type: ignore[arg-type]
    records = list(iter_images(bag))
    assert len(records) == small_survey.config.pings
    assert all(r.pixels.shape == (1, small_survey.width) for r in records)
    np.testing.assert_array_equal(np.round(np.concatenate([r.pixels for r in records]) * 255), small_survey.to_uint8())
    expected_stamps = small_survey.ping_stamps_ns(SurveyBagOptions().start_ns)
    assert [r.stamp_ns for r in records] == expected_stamps.tolist()
    gt = [d for _, dets in read_detections(bag, DEFAULT_GT_TOPIC) for d in dets]
    assert sorted(tuple(int(v) for v in d.box) for d in gt) == sorted(o.box for o in small_survey.objects)
    for det in gt:
        obj = small_survey.objects[int(det.id.removeprefix("gt-"))]
        assert det.class_name == obj.class_name
        assert det.position_m == pytest.approx((obj.along_track_m, obj.cross_track_m))


def test_frames_ground_truth_reassembles_to_simulator_boxes(tmp_path: Path, small_survey: Survey) -> None:
    height = 64
    bag = write_survey_bag(small_survey, tmp_path / "bag", SurveyBagOptions(frame_height=height))
    boxes: dict[str, list[float]] = {}
    messages = read_detections(bag, DEFAULT_GT_TOPIC)
    assert len(messages) == len(list(iter_images(bag)))
    for frame_index, (_stamp, dets) in enumerate(messages):
        for d in dets:
            r0, c0, r1, c1 = d.box
            r0, r1 = r0 + frame_index * height, r1 + frame_index * height
            b = boxes.setdefault(d.id, [r0, c0, r1, c1])
            b[0], b[2] = min(b[0], r0), max(b[2], r1)
    assert sorted(tuple(int(v) for v in b) for b in boxes.values()) == sorted(o.box for o in small_survey.objects)


def test_every_encoding_and_compressed_from_one_bag_with_bad_messages(tmp_path: Path) -> None:
    factory = MessageFactory.for_rosbags()
    store = factory.typestore
    assert store is not None
    rng = np.random.default_rng(1)
    good = [
        encode_image(factory, rng.integers(0, 256, (4, 6), dtype=np.uint8), factory.header(1, "s")),
        encode_image(factory, rng.integers(0, 65536, (4, 6), dtype=np.uint16), factory.header(2, "s")),
        encode_image(factory, rng.random((4, 6), dtype=np.float32), factory.header(3, "s")),
        encode_image(factory, rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), factory.header(4, "s"), "rgb8"),
        encode_image(factory, rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), factory.header(5, "s"), "bgr8"),
    ]
    bad = encode_image(factory, np.zeros((4, 6), np.uint8), factory.header(6, "s"))
    bad.step = 5  # step/data mismatch
    unknown = encode_image(factory, np.zeros((4, 6), np.uint8), factory.header(7, "s"))
    unknown.encoding = "yuv422"
    compressed = encode_compressed(factory, rng.integers(0, 256, (4, 6), dtype=np.uint8), factory.header(8, "s"))
    broken_jpeg = factory.make("sensor_msgs/msg/CompressedImage", header=factory.header(9, "s"), format="jpeg",
                               data=factory.byte_array(b"\xff\xd8garbage"))
    with atomic_bag_writer(tmp_path / "bag", "mcap") as writer:
        raw_conn = writer.add_connection("/raw", "sensor_msgs/msg/Image", typestore=store)
        comp_conn = writer.add_connection("/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        for msg in [*good[:2], bad, *good[2:], unknown]:
            writer.write(raw_conn, stamp_ns(msg.header), store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        for msg in (broken_jpeg, compressed):
            writer.write(comp_conn, stamp_ns(msg.header), store.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    stats = ReadStats()
    raw_records = list(iter_images(tmp_path / "bag", "/raw", stats))
    assert [r.encoding for r in raw_records] == ["mono8", "mono16", "32FC1", "rgb8", "bgr8"]
    assert stats.read == 5 and stats.skipped == 2
    assert stats.reasons == {"field step": 1, "field encoding": 1}
    assert stats.errors[0].startswith("/raw[5]: field 'step'")  # index in read (time) order: stamp 6
    stats = ReadStats()
    comp_records = list(iter_images(tmp_path / "bag", "/compressed", stats))
    assert len(comp_records) == 1 and stats.skipped == 1 and "/compressed[1]" in stats.errors[0]
    all_records = list(iter_images(tmp_path / "bag"))  # no topic: every image topic
    assert {r.topic for r in all_records} == {"/raw", "/compressed"}


def test_missing_topic_names_it_and_lists_the_bag(tmp_path: Path, small_survey: Survey) -> None:
    bag = write_survey_bag(small_survey, tmp_path / "bag")
    with pytest.raises(BagError, match="/no/such/topic.*not in the bag.*/sonar/sidescan/image"):
        list(iter_images(bag, "/no/such/topic"))
    with pytest.raises(BagError, match="is vision_msgs/msg/Detection2DArray"):
        list(iter_images(bag, DEFAULT_GT_TOPIC))
    assert list_topics(bag) == {DEFAULT_IMAGE_TOPIC: "sensor_msgs/msg/Image", DEFAULT_GT_TOPIC: "vision_msgs/msg/Detection2DArray",
                                INFO_TOPIC: "std_msgs/msg/String"}
    info = read_sonar_info(bag)  # the geometry replay needs for metric scoring
    cfg = small_survey.config
    assert (info["slant_resolution_m"], info["altitude_m_median"], info["ping_spacing_m"]) == (
        cfg.slant_resolution_m, cfg.altitude_m, cfg.ping_spacing_m)


def test_missing_and_foreign_bags(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no such bag"):
        list(iter_images(tmp_path / "absent"))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="not a readable rosbag2"):
        list(iter_images(tmp_path / "foreign"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.yaml").write_text("")
    with pytest.raises(BagError, match=str(empty)):
        list(iter_images(empty))


def test_truncated_mcap_ends_the_stream_with_a_recorded_error(tmp_path: Path, small_survey: Survey) -> None:
    bag = write_survey_bag(small_survey, tmp_path / "bag", SurveyBagOptions(mode="pings"))
    data_file = next(bag.glob("*.mcap"))
    size = data_file.stat().st_size
    with data_file.open("r+b") as f:
        f.truncate(size // 2)
    stats = ReadStats()
    try:
        records = list(iter_images(bag, stats=stats))
    except BagError as exc:  # some truncations already break opening: still a clear, named error
        assert str(bag) in str(exc)
        return
    assert 0 < len(records) < small_survey.config.pings
    assert any("storage unreadable" in e for e in stats.errors)


def test_atomic_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "bag"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_bag_writer(target) as writer:
            writer.add_connection("/x", "sensor_msgs/msg/Image", typestore=MessageFactory.for_rosbags().typestore)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    with pytest.raises(BagError, match="exists already"):
        with atomic_bag_writer(target):
            pass


def test_reading_streams_without_loading_everything(tmp_path: Path, small_survey: Survey) -> None:
    bag = write_survey_bag(small_survey, tmp_path / "bag", SurveyBagOptions(mode="pings"))
    stream = iter_images(bag)
    first = next(stream)
    assert first.index == 0
    stream.close()  # closing early releases the reader


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_vision_msgs_registered_in_distro_typestores(tmp_path: Path, small_survey: Survey, distro: str) -> None:
    bag = write_survey_bag(small_survey, tmp_path / "bag", SurveyBagOptions(distro=distro))
    assert len(read_detections(bag, DEFAULT_GT_TOPIC, distro=distro)) == len(list(iter_images(bag, distro=distro)))
