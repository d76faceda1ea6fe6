"""Benchmarks of the node: ingest, turnaround, inference and memory (figures, not tests)."""
