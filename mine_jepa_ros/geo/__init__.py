"""Positions on the Earth: navigation by stamp, georeferenced detections, fused contacts, GIS files."""
