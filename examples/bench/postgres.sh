#!/usr/bin/env bash
# SQLite against PostgreSQL, same load generator, same run:
#
#   examples/bench/postgres.sh [TENURE_BIN] [N] ["C1 C2"]
#
# Three deployments, each fresh, each loaded with `tenure bench issue` N times at
# each concurrency (accounts bound by EAB to a tenant holding the zone, so
# orders are ready at once: this measures the issuance path and the store):
#   sqlite    one server on its SQLite database
#   pg-1      one server on PostgreSQL
#   pg-2      two servers on one PostgreSQL database; the load generator's
#             accounts alternate between them (--directory twice)
# Prints the rate and p50, tenure's CPU ms per issuance (all its servers, from
# /proc/PID/stat) and PostgreSQL's (the postmaster, its children and the
# children it reaped). Starts its own throwaway cluster (scripts/postgres).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-target/release/tenure}; N=${2:-3000}; CS=${3:-"16 64"}
W=$(mktemp -d); chmod 0711 "$W"  # the cluster runs as `postgres` when we are root
eval "$(scripts/postgres "$W/pg" "${PGPORT_BENCH:-55499}")"
PM=$(head -1 "$W/pg/data/postmaster.pid")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; scripts/postgres --stop "$W/pg"; rm -rf "$W"; }
trap cleanup EXIT
tick=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_cpu() { # postmaster with what it reaped, plus the live backends
  local t; t=$(awk '{print $14+$15+$16+$17}' /proc/$PM/stat)
  for c in $(pgrep -P "$PM"); do t=$((t + $(awk '{print $14+$15}' /proc/$c/stat 2>/dev/null || echo 0))); done
  echo "$t"
}
tenure_cpu() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo "$t"; }
start() { # start DATA PORT [DB]: one server
  local data=$1 port=$2 db=${3:-}
  local env=(TENURE_LOG=warn); [ -n "$db" ] && env+=(TENURE_DATABASE="$db")
  env "${env[@]}" TENURE_METRICS_LISTEN=127.0.0.1:$(free_port) $T serve --data "$data" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$(free_port) >"$data.out" 2>"$data.log" &
  PIDS+=($!)
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done
  echo "server on $port did not start: $(cat "$data.log")" >&2; exit 1
}
run() { # run NAME DATA DB PORT...
  local name=$1 data=$2 db=$3; shift 3
  local env=(); [ -n "$db" ] && env+=(TENURE_DATABASE="$db")
  env "${env[@]}" $T init --data "$data" >/dev/null
  local creds; creds=$(env "${env[@]}" $T tenant add bench --permit bench.example.com --data "$data" --json)
  env "${env[@]}" $T resource add --tenant bench --kind lb --zone bench.example.com --data "$data" >/dev/null
  local k h; k=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["eab_kid"])' "$creds")
  h=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["eab_hmac"])' "$creds")
  PIDS=()
  local dirs=() i=0
  for port in "$@"; do
    local d=$data; if [ $i -gt 0 ]; then d=$data-$i; install -d -m 0700 "$d"; install -m 0600 "$data/ca-key.kek" "$data/admin-token" "$d/"; fi
    start "$d" "$port" "$db"; dirs+=(--directory "https://127.0.0.1:$port/directory"); i=$((i + 1))
  done
  for c in $CS; do
    local s0 p0 s1 p1; s0=$(tenure_cpu); p0=$(pg_cpu)
    $T bench issue --n $N --concurrency $c --accounts 16 --challenge none --timeout 30s --json "${dirs[@]}" \
      --root "$data/root.pem" --eab-kid "$k" --eab-hmac "$h" --domain bench.example.com > "$W/b.json"
    s1=$(tenure_cpu); p1=$(pg_cpu)
    python3 - "$name" "$c" "$W/b.json" $((s1 - s0)) $((p1 - p0)) "$tick" "$N" <<'PY'
import json, sys
name, c, path, s, p, tick, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
d = json.loads(open(path).read().strip().splitlines()[-1])
ok = f"{d.get('completed')} ok, {d.get('failed')} failed"
print(f"{name:7} c={c:<3} {d['rate']:7.1f}/s  p50 {d.get('p50_ms', '?')} ms  {ok}  tenure {s*1000/tick/n:.3f} ms/iss  postgres {p*1000/tick/n:.3f} ms/iss  total {(s+p)*1000/tick/n:.3f} ms/iss")
PY
  done
  for p in "${PIDS[@]}"; do kill "$p"; done; wait 2>/dev/null || true; PIDS=()
}
run sqlite "$W/sqlite" "" "$(free_port)"
run pg-1 "$W/pg1" "${TENURE_TEST_POSTGRES%/*}/postgres" "$(free_port)"
psql "${TENURE_TEST_POSTGRES}" -qc "CREATE DATABASE bench2" >/dev/null
run pg-2 "$W/pg2" "${TENURE_TEST_POSTGRES%/*}/bench2" "$(free_port)" "$(free_port)"
