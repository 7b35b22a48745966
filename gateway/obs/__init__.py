"""Observability: per-worker counters, Prometheus rendering (the only prometheus import), logs."""
