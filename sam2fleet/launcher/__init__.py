"""`sam2fleet up`: the whole fleet on one machine (a supervisor and a Redis launcher)."""
