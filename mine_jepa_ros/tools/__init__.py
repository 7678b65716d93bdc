"""Whole-system runs: benchmark, soak test, demo."""
