"""Benchmark scripts (JAX vs the PyTorch mirror); results in docs/BENCHMARKS.md."""
