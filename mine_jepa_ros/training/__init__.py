"""Training: patch stores, extraction, augmentations, SSL objectives, pretraining, probes, experiments."""
