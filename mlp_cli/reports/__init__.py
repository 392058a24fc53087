"""Reports on trained networks: evaluation, confusion and per-class metrics, info, plots."""
