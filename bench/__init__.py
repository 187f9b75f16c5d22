"""Benchmarks: the same CRI operations against criruntime and containerd, in one run, as ratios."""
