"""Watching engines in production: latency, errors, confidence drift; fallback and recovery."""
