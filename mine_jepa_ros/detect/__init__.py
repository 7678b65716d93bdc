"""Detection: tiling, the model and its checkpoints, classification, merging, the pipeline, scoring, replay (see docs/design.md)."""
