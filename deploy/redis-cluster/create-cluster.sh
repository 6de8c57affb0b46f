#!/bin/sh
# One-shot Redis Cluster bootstrap for deploy/docker-compose.redis-cluster.yml: joins
# the nodes into one cluster (masters, each with REDIS_CLUSTER_REPLICAS replicas).
# Runs in the redis image (redis-cli, getent). Idempotent: with the cluster already
# formed (cluster_state:ok on the first node) it changes nothing, so every
# `docker compose up` may run it again.
#
#   REDIS_CLUSTER_NODES="redis-1:6379 redis-2:6379 ..."   (host:port, space-separated)
#   REDIS_CLUSTER_REPLICAS=1
set -eu

: "${REDIS_CLUSTER_NODES:?REDIS_CLUSTER_NODES is required (host:port ...)}"
: "${REDIS_CLUSTER_REPLICAS:=1}"
: "${REDIS_CLI:=redis-cli}"

log() { printf 'redis-cluster-create: %s\n' "$*"; }
die() {
    printf 'redis-cluster-create: error: %s\n' "$*" >&2
    exit 1
}

case $REDIS_CLUSTER_REPLICAS in
'' | *[!0-9]*) die "REDIS_CLUSTER_REPLICAS must be a number, got '$REDIS_CLUSTER_REPLICAS'" ;;
esac

set -- $REDIS_CLUSTER_NODES
[ $# -ge $((3 * (REDIS_CLUSTER_REPLICAS + 1))) ] ||
    die "need at least $((3 * (REDIS_CLUSTER_REPLICAS + 1))) nodes for 3 masters, got $#"

first_host=${1%:*}
first_port=${1##*:}
if $REDIS_CLI -h "$first_host" -p "$first_port" cluster info | grep -q '^cluster_state:ok'; then
    log "the cluster is already formed"
    exit 0
fi

# CLUSTER MEET takes addresses, not names: resolve each node's. Clients are told
# the nodes' names (cluster-announce-hostname), which survive a container's new IP.
addresses=""
for node in "$@"; do
    host=${node%:*}
    port=${node##*:}
    [ "$host" != "$node" ] && [ -n "$port" ] || die "'$node' is not host:port"
    ip=$(getent hosts "$host" | awk 'NR == 1 { print $1 }')
    [ -n "$ip" ] || die "cannot resolve $host"
    addresses="$addresses $ip:$port"
done

log "creating the cluster:$addresses ($REDIS_CLUSTER_REPLICAS replica(s) per master)"
# shellcheck disable=SC2086 # one argument per address
$REDIS_CLI --cluster create $addresses --cluster-replicas "$REDIS_CLUSTER_REPLICAS" --cluster-yes

tries=0
until $REDIS_CLI -h "$first_host" -p "$first_port" cluster info | grep -q '^cluster_state:ok'; do
    tries=$((tries + 1))
    [ "$tries" -lt 30 ] || die "the cluster did not reach cluster_state:ok"
    sleep 1
done
log "cluster_state:ok"
