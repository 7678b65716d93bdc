"""The survey simulator: geometry (shadow length, nadir gap), ground truth and determinism."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from mine_jepa_ros.errors import UserError
from mine_jepa_ros.sim import ObjectPlacement, SurveyConfig, simulate_survey

FLAT = dict(sand_fraction=0.0, rock_fraction=0.0, swell_height_m=0.0, speckle_looks=1e6, noise_floor=0.0)


def _shadow_end_ground_range(intensity: np.ndarray, cfg: SurveyConfig, row: int, side: int) -> float:
    """Ground range of the far end of the zero-intensity run in one ping (port side=0, starboard side=1)."""
    s = cfg.samples_per_side
    line = intensity[row, s:] if side == 1 else intensity[row, :s][::-1]
    first_bottom = int(cfg.altitude_m / cfg.slant_resolution_m) + 2
    zeros = np.nonzero(line[first_bottom:] == 0)[0] + first_bottom
    assert zeros.size, "no shadow found"
    r_end = (zeros.max() + 1) * cfg.slant_resolution_m
    return math.sqrt(r_end**2 - cfg.altitude_m**2)


@pytest.mark.parametrize(
    ("shape", "ground_range", "side", "heading"),
    [("sphere", 12.0, 1, 0.0), ("sphere", 20.0, -1, 0.0), ("cylinder", 8.0, 1, 90.0), ("cylinder", 16.0, -1, 90.0)],
)
def test_shadow_length_matches_geometry(shape: str, ground_range: float, side: int, heading: float) -> None:
    """Objects whose top is at their centre (sphere; cylinder lying along-track) cast H*x/(h-H)."""
    cfg = SurveyConfig(pings=200, seed=3, **FLAT)
    survey = simulate_survey(cfg, placements=[ObjectPlacement("MILCO", shape, 5.0, side * ground_range, heading)])
    obj = survey.objects[0]
    h, tall = cfg.altitude_m, obj.height_m
    expected_length = tall * ground_range / (h - tall)  # shadow length H * x / (h - H) (docs/design.md)
    measured_end = _shadow_end_ground_range(survey.intensity, cfg, int(5.0 / cfg.ping_spacing_m), 0 if side > 0 else 1)  # +y: port
    measured_length = measured_end - ground_range
    assert measured_length == pytest.approx(expected_length, abs=0.06 + 0.03 * expected_length)


def test_taller_objects_cast_longer_shadows() -> None:
    cfg = SurveyConfig(pings=120, seed=4, **FLAT)
    near = simulate_survey(cfg, placements=[ObjectPlacement("MILCO", "sphere", 3.0, 6.0)])
    far = simulate_survey(cfg, placements=[ObjectPlacement("MILCO", "sphere", 3.0, 18.0)])
    row = int(3.0 / cfg.ping_spacing_m)
    assert _shadow_end_ground_range(far.intensity, cfg, row, 0) - 18.0 > _shadow_end_ground_range(near.intensity, cfg, row, 0) - 6.0


def test_nadir_gap_is_dark_and_centred(small_survey) -> None:  # type: ignore[no-untyped-def]
    cfg = small_survey.config
    s = cfg.samples_per_side
    gap = int(cfg.altitude_m / cfg.slant_resolution_m)
    img = small_survey.intensity
    water = img[:, s - gap + 1 : s + gap - 1]
    seabed = np.concatenate([img[:, : s - gap - 5], img[:, s + gap + 5 :]], axis=1)
    assert water.mean() < 0.1 * seabed.mean()
    # The first bottom return sits at slant range = altitude on both sides, symmetric about nadir.
    profile = img.mean(axis=0)
    starboard_first = s + int(np.argmax(profile[s:] > 0.2 * seabed.mean()))
    port_first = s - 1 - int(np.argmax(profile[:s][::-1] > 0.2 * seabed.mean()))
    assert abs((starboard_first - s) - gap) <= 2
    assert abs((s - 1 - port_first) - gap) <= 2


def test_backscatter_falls_with_grazing_angle() -> None:
    survey = simulate_survey(SurveyConfig(pings=200, seed=5, milco_count=0, nombo_count=0, **FLAT))
    cfg = survey.config
    s = cfg.samples_per_side
    profile = survey.intensity[:, s:].mean(axis=0)
    first = int(cfg.altitude_m / cfg.slant_resolution_m) + 10
    near, mid, far = profile[first : first + 20].mean(), profile[s // 2 : s // 2 + 20].mean(), profile[-40:-20].mean()
    assert near > mid > far


def test_same_seed_same_survey_other_seed_other_survey(small_config) -> None:  # type: ignore[no-untyped-def]
    a = simulate_survey(small_config)
    b = simulate_survey(small_config)
    c = simulate_survey(small_config, seed=small_config.seed + 1)
    assert np.array_equal(a.intensity, b.intensity)
    assert a.objects == b.objects
    assert not np.array_equal(a.intensity, c.intensity)


def test_ground_truth_boxes_hold_highlight_and_shadow(small_config) -> None:  # type: ignore[no-untyped-def]
    survey = simulate_survey(small_config, speckle_looks=1e6, noise_floor=0.0)  # no speckle: clean levels
    assert {o.class_name for o in survey.objects} == {"MILCO", "NOMBO"}
    seabed_level = np.median(survey.intensity)
    h, w = survey.intensity.shape
    for obj in survey.objects:
        r0, c0, r1, c1 = obj.box
        assert 0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w
        patch = survey.intensity[r0:r1, c0:c1]
        assert patch.max() > 3 * seabed_level  # the highlight
        assert (patch < 0.1 * seabed_level).mean() > 0.1  # the shadow
        centre_col = (c0 + c1) / 2
        assert (centre_col < w / 2) == (obj.cross_track_m > 0)  # REP-103: port (left of nadir) positive
        assert obj.class_name == ("MILCO" if obj.shape in ("cylinder", "truncated_cone", "sphere") else "NOMBO")


def test_full_size_survey_shape_and_objects() -> None:
    survey = simulate_survey(SurveyConfig(pings=2048, samples_per_side=1024, seed=1))
    assert survey.intensity.shape == (2048, 2048)
    assert survey.intensity.dtype == np.float32
    assert len(survey.objects) >= 8
    u8, u16 = survey.to_uint8(), survey.to_uint16()
    assert u8.dtype == np.uint8 and u16.dtype == np.uint16
    assert 15 < u8.mean() < 120  # a usable dynamic range, neither black nor saturated


def test_invalid_config_names_the_field() -> None:
    with pytest.raises(UserError, match="altitude_m"):
        SurveyConfig(altitude_m=0.0)
    with pytest.raises(ValueError, match="outside the survey"):
        simulate_survey(SurveyConfig(pings=50, **FLAT), placements=[ObjectPlacement("MILCO", "sphere", 500.0, 5.0)])


def test_fleet_variation_draws_distinct_valid_surveys_deterministically() -> None:
    from mine_jepa_ros.sim import FleetVariation

    base = SurveyConfig(pings=64, samples_per_side=128, max_range_m=16.0, altitude_m=2.5, milco_count=1, nombo_count=1,
                        object_ground_range_m=(3.0, 12.0), object_min_spacing_m=5.0)
    fleet = FleetVariation()
    draws = [fleet.draw(base, seed) for seed in range(40)]  # each is a valid SurveyConfig (checked on creation)
    assert fleet.draw(base, 7) == draws[7]  # deterministic per seed
    for name, (lo, hi) in (("gain", fleet.gain), ("tvg_exponent", fleet.tvg_exponent), ("beam_shape", fleet.beam_shape)):
        values = [getattr(d, name) for d in draws]
        assert lo <= min(values) < max(values) <= hi and len(set(values)) == 40, name
    assert len({d.max_range_m / d.samples_per_side for d in draws}) == 40  # range resolution varies
    assert all(d.object_ground_range_m[1] < d.max_ground_range_m for d in draws)
    # the gain scales the echoes; a positive TVG residual brightens far range against near range
    bright, dim = (simulate_survey(replace(base, gain=g, seed=3)).intensity for g in (2.0, 0.5))
    assert bright.mean() > 2 * dim.mean()
    up, down = (simulate_survey(replace(base, tvg_exponent=e, seed=3)).intensity for e in (0.6, -0.6))
    far, near = slice(0, 40), slice(base.samples_per_side - 80, base.samples_per_side - 40)  # port: far range on the left
    assert up[:, far].mean() / up[:, near].mean() > 1.5 * down[:, far].mean() / down[:, near].mean()
