"""Executors that run per-image work: local processes by default."""
