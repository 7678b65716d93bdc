"""The detection runtime: tiling, the model and its checkpoints, the backends, merging, the operating point, the pipeline (see docs/design.md)."""
