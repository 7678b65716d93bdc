"""Sonar-driver inputs: RawSonarImage port/starboard pairs and SMaRC Sidescan pings give the same
waterfall rows, hence the same detections, as Image rows; bad driver messages are counted, not fatal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.replay import ReplayOptions, replay
from mine_jepa_ros.io.recording import RecordingOptions
from mine_jepa_ros.errors import BagError, InputError
from mine_jepa_ros.io.bag import atomic_bag_writer
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.sonar_drivers import (
    DTYPES,
    RAW_SONAR_IMAGE_TYPE,
    Channel,
    ChannelPairer,
    raw_sonar_channel,
    raw_sonar_image_msg,
    smarc_row,
    smarc_sidescan_msg,
)
from mine_jepa_ros.sim import Survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag

F = MessageFactory.for_rosbags("jazzy")


@pytest.mark.parametrize("code", sorted(DTYPES))
@pytest.mark.parametrize("bigendian", [False, True])
def test_every_dtype_decodes_to_unit_intensities(code: int, bigendian: bool) -> None:
    dtype = DTYPES[code]
    values = np.array([0, 1, 2, 3], dtype) if dtype.kind != "f" else np.array([0.0, 0.25, 0.5, 2.0], dtype)
    channel = raw_sonar_channel(raw_sonar_image_msg(F, F.header(7, "port"), values, 0.05, is_bigendian=bigendian))
    if dtype.kind == "f":
        np.testing.assert_allclose(channel.samples, [0.0, 0.25, 0.5, 1.0])  # clipped at full scale
    else:
        np.testing.assert_allclose(channel.samples, values.astype(np.float64) / np.iinfo(dtype).max, rtol=1e-6)
    assert channel.slant_resolution_m == pytest.approx(0.05) and channel.stamp_ns == 7


def test_bad_driver_messages_name_their_field() -> None:
    msg = raw_sonar_image_msg(F, F.header(0, "p"), np.arange(8, dtype=np.uint8), 0.05)
    msg.image.dtype = 12
    with pytest.raises(InputError, match="image.dtype"):
        raw_sonar_channel(msg)
    msg = raw_sonar_image_msg(F, F.header(0, "p"), np.arange(8, dtype=np.uint16), 0.05)
    msg.samples_per_beam = 9
    with pytest.raises(InputError, match="image.data"):
        raw_sonar_channel(msg)
    with pytest.raises(InputError, match="channel lengths differ"):
        smarc_row(smarc_sidescan_msg(F, F.header(0, "s"), np.zeros(8), np.zeros(7)))
    shifted = raw_sonar_image_msg(F, F.header(0, "p"), np.full(4, 255, np.uint8), 0.05)
    shifted.sample0 = 3  # the first 3 samples were gated off: padded so that column -> range holds
    np.testing.assert_allclose(raw_sonar_channel(shifted).samples, [0, 0, 0, 1, 1, 1, 1])


def test_the_pairer_matches_by_stamp_and_counts_orphans() -> None:
    def ch(t_ms: int, value: float) -> Channel:
        return Channel(t_ms * 1_000_000, F.header(t_ms * 1_000_000, "x"), np.full(3, value, np.float32), 0.05)

    pairer = ChannelPairer(tolerance_ns=20_000_000)
    assert pairer.add("port", ch(0, 0.1)) == []
    rows = pairer.add("starboard", ch(5, 0.2))  # 5 ms later: the same ping
    assert len(rows) == 1
    np.testing.assert_allclose(rows[0][2], [[0.1, 0.1, 0.1, 0.2, 0.2, 0.2]], rtol=1e-6)
    assert pairer.add("port", ch(100, 0.3)) == []  # its starboard partner never comes
    assert pairer.add("starboard", ch(200, 0.4)) == []  # ... the port one at 100 ms is now out of reach
    assert pairer.unpaired["port"] == 1
    pairer.flush()
    assert pairer.unpaired == {"port": 1, "starboard": 1}


@pytest.mark.slow
@pytest.mark.parametrize(("input_type", "encoding"), [("raw_sonar_image", "mono8"), ("raw_sonar_image", "mono16"),
                                                      ("smarc_sidescan", "mono8")])
def test_driver_pings_give_the_same_detections_as_image_rows(
        tmp_path: Path, narrow_survey: Survey, busy_checkpoint: Path, input_type: str, encoding: str) -> None:
    results = {}
    for kind in ("image", input_type):
        bag = write_survey_bag(narrow_survey, tmp_path / f"{kind}_bag",
                               SurveyBagOptions(mode="pings", input_type=kind, encoding=encoding))  # type: ignore[arg-type]
        results[kind] = replay(bag, busy_checkpoint, tmp_path / f"{kind}_out",
                               ReplayOptions(detector=DetectorOptions(thresholds=0.4), progress=False))
    image, driver = results["image"], results[input_type]
    assert image.detections > 0 and image.skipped == driver.skipped == 0
    assert driver.detection_list == image.detection_list
    assert driver.metrics is not None and driver.metrics.detections == image.metrics.detections  # type: ignore[union-attr]


def test_replay_counts_unpaired_and_bad_driver_pings_and_goes_on(
        tmp_path: Path, narrow_survey: Survey, busy_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = F.typestore
    assert store is not None
    path = tmp_path / "garmin"
    rows = narrow_survey.to_uint8()[:120]
    s = narrow_survey.config.samples_per_side
    with atomic_bag_writer(path) as w:
        port = w.add_connection("/garmin/sonar_image_port", RAW_SONAR_IMAGE_TYPE, typestore=store)
        stbd = w.add_connection("/garmin/sonar_image_starboard", RAW_SONAR_IMAGE_TYPE, typestore=store)
        for i, row in enumerate(rows):
            t = 1_000_000_000 + i * 50_000_000
            p = raw_sonar_image_msg(F, F.header(t, "port"), np.ascontiguousarray(row[:s][::-1]), 0.05)
            if i == 10:
                p.image.dtype = 42  # a bad message: skipped, counted
            w.write(port, t, store.serialize_cdr(p, RAW_SONAR_IMAGE_TYPE))
            if i != 20:  # ping 20's starboard channel is lost: its port channel has no partner
                sb = raw_sonar_image_msg(F, F.header(t + 3_000_000, "stbd"), np.ascontiguousarray(row[s:]), 0.05)
                w.write(stbd, t + 3_000_000, store.serialize_cdr(sb, RAW_SONAR_IMAGE_TYPE))
    result = replay(path, busy_checkpoint, tmp_path / "out",
                    ReplayOptions(detector=DetectorOptions(thresholds=0.4), progress=False))
    assert result.mode == "pings" and result.images == 118  # 120 pings, 2 not assembled
    assert result.skip_reasons == {"bag unknown dtype": 1, "bag unpaired ping": 2}  # ping 10's starboard too
    with pytest.raises(BagError, match="/nope is not a marine_acoustic_msgs/msg/RawSonarImage topic"):
        replay(path, busy_checkpoint, tmp_path / "o2",
               ReplayOptions(recording=RecordingOptions(port_topic="/nope"), detector=DetectorOptions(thresholds=0.4),
                             progress=False))
    assert main(["replay", "--bag", str(path), "--model", str(busy_checkpoint), "--out", str(tmp_path / "o3"),
                 "--thresholds", "0.4", "--input-type", "raw_sonar_image", "--port-topic", "/garmin/sonar_image_port",
                 "--starboard-topic", "/garmin/sonar_image_starboard"]) == 0
