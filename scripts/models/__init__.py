"""Graph builders used by scripts/make_models.py."""
