"""Training a spec: the runner, the loop, the run folder, checkpoints, distributed runs, the host."""
