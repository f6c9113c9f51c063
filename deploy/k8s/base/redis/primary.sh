# Sourced by start-redis.sh and start-sentinel.sh: which pod holds the primary now.
#
# The sentinels of the other pods know (they follow every failover); this pod's own
# sentinel restarted with it and knows nothing yet, so it is not asked. Only when no
# other sentinel answers (a new set, or all of it restarted) is redis-0 the primary.
# Pods are named by the headless Service `redis`: redis-N.redis resolves inside the
# namespace, whatever the namespace is called.
MASTER_NAME=sam2fleet
SELF="$(hostname).redis"

current_primary() {
  for i in 0 1 2; do
    peer="redis-$i.redis"
    [ "$peer" = "$SELF" ] && continue
    addr=$(timeout 3 redis-cli -h "$peer" -p 26379 --raw \
      SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1) || true
    if [ -n "$addr" ]; then
      echo "$addr"
      return
    fi
  done
  echo "redis-0.redis"
}

# A pod's DNS name appears a moment after the pod: wait for it (up to a minute) so a
# sentinel does not refuse a name it cannot resolve yet.
wait_resolvable() {
  for _ in $(seq 60); do
    getent hosts "$1" >/dev/null && return 0
    sleep 1
  done
  echo "$1 does not resolve" >&2
  return 1
}
