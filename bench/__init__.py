"""Benchmarks (scripts that print tables); see bench/README.md."""
