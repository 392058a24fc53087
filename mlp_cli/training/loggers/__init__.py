"""Where a run's numbers go besides ``metrics.jsonl``: the loggers ``run.log`` names (registry.py)."""
