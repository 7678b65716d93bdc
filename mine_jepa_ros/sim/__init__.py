"""Synthetic side-scan sonar surveys with ground truth (see :mod:`mine_jepa_ros.sim.survey`)."""

from mine_jepa_ros.sim.survey import (
    CLASS_NAMES,
    FleetVariation,
    ObjectPlacement,
    SimObject,
    Survey,
    SurveyConfig,
    SurveySimulator,
    simulate_survey,
)

__all__ = ["CLASS_NAMES", "FleetVariation", "ObjectPlacement", "SimObject", "Survey", "SurveyConfig", "SurveySimulator", "simulate_survey"]
