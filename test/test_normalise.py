"""Per-recording range normalisation: online, ping by ping, the same in extraction and in the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.detect.normalise import NormalisationConfig, RangeNormaliser, normalise_image
from mine_jepa_ros.errors import CheckpointError, StoreError, UserError
from mine_jepa_ros.sim import SurveyConfig, simulate_survey

RANGE = NormalisationConfig("range", half_life_pings=64.0)


def test_any_split_into_blocks_gives_the_same_rows() -> None:
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 0.1, size=(300, 80)).astype(np.float32)
    whole = normalise_image(image, RANGE)
    normaliser = RangeNormaliser(RANGE)
    parts, row = [], 0
    while row < len(image):
        k = int(rng.integers(1, 40))
        parts.append(normaliser(image[row:row + k]))
        row += k
    assert np.array_equal(np.concatenate(parts), whole) and normaliser.pings == 300
    assert whole.dtype == np.float32 and whole.min() >= 0 and whole.max() <= 1
    # causal: a row's output depends on the rows before it and itself only
    assert np.array_equal(normalise_image(image[:120], RANGE), whole[:120])


def test_gain_and_tvg_differences_between_surveys_are_taken_out() -> None:
    """Two surveys of one seabed, one with another gain and time-varied gain: their raw range
    profiles differ by up to 3x; normalised, by at most 15 % (the floor that keeps the water column
    dark costs the darkest bins some of the correction)."""
    cfg = SurveyConfig(pings=512, samples_per_side=128, max_range_m=12.0, altitude_m=2.0, milco_count=0, nombo_count=0,
                       seed=4)
    raw = simulate_survey(cfg).to_uint8().astype(np.float32) / 255.0
    profile = np.linspace(0.6, 1.8, raw.shape[1], dtype=np.float32)  # gain growing with range
    other = np.clip(raw * profile, 0, 1)
    a, b = normalise_image(raw, RANGE)[200:], normalise_image(other, RANGE)[200:]
    seabed = raw[200:].mean(axis=0) > 0.05  # columns with seabed echo (not the water column)
    raw_ratio = other[200:].mean(axis=0)[seabed] / raw[200:].mean(axis=0)[seabed]
    ratio = b.mean(axis=0)[seabed] / a.mean(axis=0)[seabed]
    assert raw_ratio.max() / raw_ratio.min() > 2.5
    assert np.abs(ratio - 1).max() < 0.15 and np.median(np.abs(ratio - 1)) < 0.1
    # the seabed's mean comes out near the target, whatever the survey's gain
    assert abs(float(np.median(b.mean(axis=0)[seabed])) - RANGE.target_mean) < 0.05


def test_a_new_ping_width_starts_a_new_stream_and_settings_are_checked() -> None:
    normaliser = RangeNormaliser(RANGE)
    normaliser(np.full((10, 50), 0.5, np.float32))
    out = normaliser(np.full((3, 30), 0.1, np.float32))
    assert normaliser.pings == 3 and out.shape == (3, 30) and normaliser.mean is not None
    assert np.allclose(out, 0.1 * RANGE.target_mean / (0.1 + RANGE.floor))
    assert not NormalisationConfig().active and normalise_image(np.ones((2, 2)), NormalisationConfig()).shape == (2, 2)
    assert NormalisationConfig.from_dict(RANGE.to_dict()) == RANGE and NormalisationConfig.from_dict({}) == NormalisationConfig()
    for bad, match in [({"kind": "zscore"}, "expected one of"), ({"kind": "range", "half_life_pings": 0}, "half_life_pings"),
                       ({"kind": "range", "gain": 2}, "unknown keys"), ({"kind": "range", "floor": "x"}, "normalisation")]:
        with pytest.raises(UserError, match=match):
            NormalisationConfig.from_dict(bad)


def test_a_checkpoint_with_a_bad_normalisation_is_refused_naming_the_file(checkpoint: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from mine_jepa_ros.detect.metadata import read_metadata
    from mine_jepa_ros.detect.model import load_checkpoint, save_checkpoint

    model = load_checkpoint(checkpoint)
    model.metadata = replace(model.metadata, input_normalisation=RANGE.to_dict())
    good = save_checkpoint(tmp_path / "range.safetensors", model)
    assert read_metadata(good).normalisation == RANGE
    model.metadata = replace(model.metadata, input_normalisation={"kind": "histogram"})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: invalid metadata: input_normalisation"):
        read_metadata(save_checkpoint(tmp_path / "bad.safetensors", model))


@pytest.mark.slow
def test_extraction_normalises_what_the_pipeline_will_and_the_probe_carries_it(tmp_path: Path) -> None:
    from mine_jepa_ros.detect.metadata import read_metadata
    from mine_jepa_ros.detect.tiling import WaterfallTiler
    from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
    from mine_jepa_ros.training.extract import (
        SimExtractConfig,
        extract_recordings,
        extract_simulator,
        normalised_u8,
        simulated_surveys,
    )
    from mine_jepa_ros.training.patches import PatchStore, open_store
    from mine_jepa_ros.training.probe import ProbeConfig, train_probe

    cfg = SimExtractConfig(surveys=2, pings=384, samples_per_side=192, max_range_m=12.0, altitude_m=2.0,
                           objects_per_class=2, seed=2, vary=True, normalise="range")
    store = extract_simulator(tmp_path / "sim", cfg, progress=False)
    assert store.normalisation == NormalisationConfig("range").to_dict()
    group, survey = next(iter(simulated_surveys(cfg)))
    image = normalised_u8(survey.to_uint8(), NormalisationConfig("range"))
    windows = {w.tobytes() for w in WaterfallTiler(96, 64).tile(image).patches}
    in_group = store.arrays["groups"] == store.meta["groups"].index(group)
    assert windows <= {store.patches[i].tobytes() for i in np.flatnonzero(in_group)}  # cut from the normalised survey
    assert not windows & {w.tobytes() for w in WaterfallTiler(96, 64).tile(survey.to_uint8()).patches}
    model = train_probe(store, ProbeConfig(mode="linear", epochs=1, device="cpu"), tmp_path / "m.safetensors",
                        progress=False)
    assert model.metadata.input_normalisation == store.normalisation
    assert read_metadata(tmp_path / "m.safetensors").normalisation.active
    # a recording (bag of frames) extracted with normalisation gives the simulator's windows of the same survey
    bag = write_survey_bag(survey, tmp_path / "bag", SurveyBagOptions(frame_height=128))
    from_bag = extract_recordings(tmp_path / "from_bag", [bag], normalisation=NormalisationConfig("range"), progress=False)
    assert from_bag.normalisation == store.normalisation
    assert windows <= {p.tobytes() for p in np.asarray(from_bag.patches[:])}  # the pipeline's normaliser, frame by frame
    # shards of one store share their normalisation
    plain = extract_recordings(tmp_path / "plain", [bag], progress=False)
    with pytest.raises(StoreError, match="input normalisation"):
        open_store([from_bag.path, plain.path])
    meta = json.loads((plain.path / "meta.json").read_text())
    assert meta["normalisation"] == {} and PatchStore(plain.path).normalisation == {}
