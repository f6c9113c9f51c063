#!/bin/sh
# The sentinel of one pod. Three of them (one per pod), a quorum of two: losing the
# primary's pod promotes a replica within about down-after-milliseconds plus a second.
# Sentinel rewrites its configuration file, so it is written fresh into a writable
# volume on every start.
set -eu
. /scripts/primary.sh
primary=$(current_primary)
wait_resolvable "$primary"
wait_resolvable "$SELF"
conf=/sentinel/sentinel.conf
cat > "$conf" <<CONF
port 26379
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
sentinel announce-port 26379
sentinel monitor $MASTER_NAME $primary 6379 2
sentinel down-after-milliseconds $MASTER_NAME 5000
sentinel failover-timeout $MASTER_NAME 60000
sentinel parallel-syncs $MASTER_NAME 1
CONF
echo "sentinel on $SELF; monitoring $MASTER_NAME at $primary"
exec redis-server "$conf" --sentinel
