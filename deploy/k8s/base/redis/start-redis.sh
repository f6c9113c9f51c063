#!/bin/sh
# Redis of one pod: the primary, or a replica of the current primary.
# Durable like the compose Redis: AOF fsynced every second, and noeviction so that a
# full Redis refuses writes (the API answers 503) instead of dropping queued jobs.
# Protected mode off: it refuses every client but loopback when no password is set
# (the official image's entrypoint, not used here, turns it off the same way); the
# NetworkPolicy `redis-from-fleet` is what keeps other pods out.
set -eu
. /scripts/primary.sh
primary=$(current_primary)
set -- --port 6379 --protected-mode no --dir /data \
  --appendonly yes --appendfsync everysec \
  --maxmemory "${REDIS_MAXMEMORY:-3gb}" --maxmemory-policy noeviction \
  --replica-announce-ip "$SELF" --replica-announce-port 6379
if [ "$primary" != "$SELF" ]; then
  set -- "$@" --replicaof "$primary" 6379
fi
echo "redis on $SELF; primary: $primary"
exec redis-server "$@"
