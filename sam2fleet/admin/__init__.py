"""Administration of a fleet: fetching checkpoints, managing API keys."""
