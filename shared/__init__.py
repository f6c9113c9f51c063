"""What the gateway and the workers both obey (imported as `sam2fleet.shared`).

settings (one `Settings` per process), schemas (request and result shapes), errors
(one error tree), records (every Redis name, the job record, the heartbeat, the
scripts that change a job), models (the model table and where checkpoints live),
queue (the Celery configuration), redis_clients (every Redis client and the
broker options, from one URL: one Redis or Sentinel), images (probing and
decoding), logs, metrics (shared label values and buckets). It imports neither the
gateway, the workers nor the client.
"""
