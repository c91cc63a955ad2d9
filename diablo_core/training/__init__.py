"""Training: the loop, its run state, loss, schedule, checkpoints and progress callbacks."""
