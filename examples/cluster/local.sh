#!/usr/bin/env bash
# A three-node Toka cluster on 127.0.0.1 over a local PostgreSQL, without Docker: what
# compose.yaml runs, as plain processes (README, "Deploying a cluster").
#
#   examples/cluster/local.sh            # Ctrl-C (or SIGTERM) stops the nodes gracefully
#
# It starts PostgreSQL with toka-store/tests/postgres/start.sh (a throw-away server on
# 127.0.0.1:55432, installed with apt-get if missing) unless TOKA_JOURNAL names a
# database, makes one data directory with `toka-node init` and copies it for each node
# (every node needs the same root and seal keys), starts nodes n1, n2 and n3, waits
# until the eight shards are spread over them, prints `GET /cluster`, and waits. Data
# directories, logs and the node config stay in $TOKA_CLUSTER_DIR for the next run.
#
# Environment:
#   TOKA_NODE_BIN     the toka-node binary [default: built with cargo build --release]
#   TOKA_JOURNAL      postgres://…?schema=NAME [default: the local server, schema `local`]
#   TOKA_CLUSTER_DIR  data directories, logs [default: /tmp/toka-cluster]
#   TOKA_CLUSTER_PORTS  three ports [default: "7071 7072 7073"]
# Needs curl and jq.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${TOKA_CLUSTER_DIR:-/tmp/toka-cluster}"
read -r -a ports <<<"${TOKA_CLUSTER_PORTS:-7071 7072 7073}"
nodes=(n1 n2 n3)
[ "${#ports[@]}" = 3 ] || { echo "TOKA_CLUSTER_PORTS needs three ports" >&2; exit 2; }
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "local.sh needs $tool" >&2; exit 2; }
done

bin="${TOKA_NODE_BIN:-}"
if [ -z "$bin" ]; then
    echo "building toka-node (cargo build --release -p toka-node)" >&2
    cargo build --release -p toka-node --manifest-path "$root/Cargo.toml" >&2
    bin="${CARGO_TARGET_DIR:-$root/target}/release/toka-node"
fi

journal="${TOKA_JOURNAL:-}"
if [ -z "$journal" ]; then
    journal="$("$root/toka-store/tests/postgres/start.sh")?schema=local"
fi

# One data directory, copied: the same root key (tokens) and seal key on every node.
mkdir -p "$dir"
if [ ! -f "$dir/n1/root.key" ]; then
    "$bin" init --data-dir "$dir/n1" >/dev/null
fi
for id in n2 n3; do
    [ -f "$dir/$id/root.key" ] || cp -a "$dir/n1" "$dir/$id"
done
# Shared by the three: 8 shards, 3-s leases (the defaults, spelled out).
cat >"$dir/node.toml" <<'EOF'
durability = "fsync"

[cluster]
shards = 8
lease_ms = 3000
EOF

pids=()
stop() {
    trap - INT TERM EXIT
    if [ "${#pids[@]}" -gt 0 ]; then
        echo "stopping the nodes (each hands its shards over)" >&2
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    echo "stopped" >&2
}
trap stop EXIT
trap 'exit 0' INT TERM

for i in 0 1 2; do
    id="${nodes[$i]}"
    TOKA_JOURNAL="$journal" "$bin" run --node-id "$id" \
        --listen "127.0.0.1:${ports[$i]}" --data-dir "$dir/$id" --config "$dir/node.toml" \
        >>"$dir/$id.log" 2>&1 &
    pids+=("$!")
done
echo "started n1, n2, n3 on 127.0.0.1:${ports[0]}, :${ports[1]}, :${ports[2]} (logs in $dir/n*.log)" >&2

# Ready when every shard is served by one node, each node serves some, and n1's view of
# the cluster (`GET /cluster`, refreshed every lease_ms / 6) shows all three and every holder.
token="$(cat "$dir/n1/admin.token")"
served() {
    local total=0 each
    for port in "${ports[@]}"; do
        each="$(curl -fsS --max-time 2 "http://127.0.0.1:$port/health" | jq '.shards | length')" || return 1
        [ "$each" -gt 0 ] || return 1
        total=$((total + each))
    done
    [ "$total" = 8 ] || return 1
    curl -fsS --max-time 2 -H "Authorization: Bearer $token" "http://127.0.0.1:${ports[0]}/cluster" |
        jq -e '([.members[] | select(.alive)] | length) == 3 and all(.shards[]; .holder != null)' >/dev/null
}
deadline=$((SECONDS + 60))
until served; do
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a node exited; see $dir/n*.log" >&2; exit 1; }
    done
    [ "$SECONDS" -lt "$deadline" ] || { echo "the shards were not spread within 60 s" >&2; exit 1; }
    sleep 0.5
done

curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:${ports[0]}/cluster" |
    jq -c '{members: [.members[] | {id, address, alive}], shards: [.shards[] | {shard, holder, epoch}]}'
echo "cluster ready: n1 http://127.0.0.1:${ports[0]}, n2 http://127.0.0.1:${ports[1]}, n3 http://127.0.0.1:${ports[2]}; admin token in $dir/n1/admin.token"
# Until Ctrl-C / SIGTERM (or a node exits).
wait -n "${pids[@]}" || true
echo "a node exited; see $dir/n*.log" >&2
exit 1
