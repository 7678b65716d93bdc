"""Training tools: patch datasets, sonar augmentations, SIGReg and baselines, pretraining, probing."""
