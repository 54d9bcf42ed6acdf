"""Executors that run per-image work: local processes by default, Ray Data with the ray extra."""
