"""Offline evaluation: scoring (Pd, false alarms per km², AP, FROC), replay over bags and image folders, reports, calibration of the operating point (see docs/design.md)."""
