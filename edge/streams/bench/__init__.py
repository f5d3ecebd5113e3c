"""Benchmarks of the stream service (not part of the installed package)."""
