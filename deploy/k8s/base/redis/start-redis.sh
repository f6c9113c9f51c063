#!/bin/sh
# Redis of one pod: the primary, or a replica of the current primary.
# Durable like the compose Redis: AOF fsynced every second, and noeviction so that a
# full Redis refuses writes (the API answers 503) instead of dropping queued jobs.
# Protected mode off: it refuses every client but loopback when no password is set
# (the official image's entrypoint, not used here, turns it off the same way); the
# NetworkPolicy `redis-from-fleet` is what keeps other pods out.
# min-replicas-to-write: a primary that no replica follows (the sentinels promoted
# another pod behind its back) refuses writes rather than take writes the failover
# will discard; the fleet then asks the sentinels again (docs/reliability.md).
set -eu
. /scripts/primary.sh
primary=$(current_primary)
set -- --port 6379 --protected-mode no --dir /data \
  --appendonly yes --appendfsync everysec \
  --maxmemory "${REDIS_MAXMEMORY:-3gb}" --maxmemory-policy noeviction \
  --min-replicas-to-write 1 --min-replicas-max-lag 10 \
  --replica-announce-ip "$SELF" --replica-announce-port 6379
if [ "$primary" != "$SELF" ]; then
  # No failover candidate until synced: the sentinels would otherwise promote a pod
  # that has not received a byte yet if the primary were lost meanwhile. A
  # background loop raises the priority once the link to the primary is up.
  set -- "$@" --replicaof "$primary" 6379 --replica-priority 0
  (
    until redis-cli -p 6379 info replication 2>/dev/null | grep -q '^master_link_status:up'; do
      sleep 1
    done
    redis-cli -p 6379 config set replica-priority 100 >/dev/null
  ) &
fi
echo "redis on $SELF; primary: $primary"
exec redis-server "$@"
