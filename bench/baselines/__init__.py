"""Baselines the benchmarks compare mlserve with (see README.md)."""
