"""Shared fixtures: small simulated surveys (tiny sizes keep the suite fast on 2 cores)."""

from __future__ import annotations

import pytest

from mine_jepa_ros.sim import Survey, SurveyConfig, simulate_survey

SMALL = SurveyConfig(pings=512, samples_per_side=256, max_range_m=20.0, altitude_m=3.0,
                     ping_spacing_m=0.05, milco_count=2, nombo_count=2, object_ground_range_m=(4.0, 14.0), seed=11)


@pytest.fixture(scope="session")
def small_config() -> SurveyConfig:
    return SMALL


@pytest.fixture(scope="session")
def small_survey() -> Survey:
    return simulate_survey(SMALL)
