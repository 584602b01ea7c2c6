"""Benchmarks measured against their baselines in the same run: `python -m benchmarks` (nox -s bench)."""
