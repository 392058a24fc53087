"""`mlp download-data` (placeholder, being written)."""
