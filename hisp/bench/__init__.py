"""Benchmarks that run outside Django (``python -m hisp.bench.<name> --json``)."""
