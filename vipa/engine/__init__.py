"""Engine: run configuration, training, evaluation, checkpoints and run directories."""
