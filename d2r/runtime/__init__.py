"""Run plumbing: devices, seeds and random states, files of a run, checkpoints, the live view, provenance."""
