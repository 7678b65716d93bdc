"""Positions on the Earth: navigation by stamp, georeferencing and contact tracking (online and from bags), fused contacts, GIS files."""
