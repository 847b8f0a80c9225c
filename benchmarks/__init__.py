"""Benchmarks: one module per claimed figure, each against a baseline measured in the same run."""
