#!/usr/bin/env bash
# Issue 17: does a registry of 1,000,000 resources (100,000 tenants) slow the
# ACME path or the renewal sweep? A/B on one binary, empty against seeded,
# alternating (this machine's speed drifts):
#
#   examples/bench/registry-scale.sh [TENURE_BIN] [N] ["C1 C2"] [ROUNDS]
#
# Seeds SEED_DIR once (`tenure bench seed`, SEED_TENANTS / SEED_RESOURCES /
# SEED_ZONE_EVERY; an existing SEED_DIR is reused), then, ROUNDS times, for
# empty and seeded: examples/bench/server-cost.sh (a copy of the seeded
# directory via SEED_DATA) at each concurrency, and the renewal sweep
# (engine/benches/sweep.rs, TENURE_SWEEP_N certificates, TENURE_SWEEP_DATA a
# copy of the seeded directory). Prints each run, then a table of means.
#
# PG=1 measures the ACME path on PostgreSQL instead (no sweep): a throwaway
# cluster (scripts/postgres), the seeded registry moved into a template
# database once (`tenure migrate`), and each run on a fresh database, empty or
# a copy of the template; tenure's and PostgreSQL's CPU per issuance (LOGS=DIR
# keeps each server's log).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-target/release/tenure}; N=${2:-3000}; CS=${3:-"16 64"}; ROUNDS=${4:-2}
SEED_DIR=${SEED_DIR:-/tmp/tenure-seed-1m}
SEED_TENANTS=${SEED_TENANTS:-100000}; SEED_RESOURCES=${SEED_RESOURCES:-1000000}; SEED_ZONE_EVERY=${SEED_ZONE_EVERY:-0}
SWEEP_N=${TENURE_SWEEP_N:-20000}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
if [ ! -f "$SEED_DIR/tenure.db" ]; then
  /usr/bin/time -f "seed: %e s wall, %U s user, %S s sys, %M KB max RSS" \
    $T bench seed --data "$SEED_DIR" --tenants "$SEED_TENANTS" --resources "$SEED_RESOURCES" --zone-every "$SEED_ZONE_EVERY" --json
fi
echo "seeded directory $SEED_DIR: $(du -sh "$SEED_DIR" | cut -f1)"
others() { while pgrep -f 'bench issue' >/dev/null; do sleep 5; done; }
if [ "${PG:-0}" = 1 ]; then
  chmod 0711 "$W"; SP=
  trap '{ [ -z "$SP" ] || kill $SP; wait; scripts/postgres --stop "$W/pg"; rm -rf "$W"; } 2>/dev/null || true' EXIT
  eval "$(scripts/postgres "$W/pg" "${PGPORT_BENCH:-55499}")"
  DB=${TENURE_TEST_POSTGRES%/*}; PM=$(head -1 "$W/pg/data/postmaster.pid")
  psql "$TENURE_TEST_POSTGRES" -qc "CREATE DATABASE seed_tpl"
  cp -a "$SEED_DIR" "$W/tpl"
  /usr/bin/time -f "migrate: %e s" $T migrate --from "$W/tpl" --to "$DB/seed_tpl" >/dev/null
  # As a database that has served a while has: statistics for the planner, and
  # no vacuum pending (a copy of a template starts with no activity counted,
  # so autovacuum would not analyze it soon).
  /usr/bin/time -f "vacuum analyze: %e s" psql "$DB/seed_tpl" -qc "VACUUM ANALYZE"
  tick=$(getconf CLK_TCK)
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  pg_cpu() { local t; t=$(awk '{print $14+$15+$16+$17}' /proc/$PM/stat)
    for c in $(pgrep -P "$PM"); do t=$((t + $(awk '{print $14+$15}' /proc/$c/stat 2>/dev/null || echo 0))); done; echo "$t"; }
  run=0
  for r in $(seq "$ROUNDS"); do
    for mode in empty seeded; do
      others; run=$((run + 1)); d=$W/d$run; db=$DB/r$run
      if [ $mode = seeded ]; then
        psql "$TENURE_TEST_POSTGRES" -qc "CREATE DATABASE r$run TEMPLATE seed_tpl"
        install -d -m 0700 "$d"; install -m 0600 "$W/tpl/ca-key.kek" "$W/tpl/admin-token" "$d/"; cp "$W/tpl/root.pem" "$d/"
      else
        psql "$TENURE_TEST_POSTGRES" -qc "CREATE DATABASE r$run"
        TENURE_DATABASE=$db $T init --data "$d" >/dev/null
      fi
      creds=$(TENURE_DATABASE=$db $T tenant add bench --permit bench.example.com --data "$d" --json)
      TENURE_DATABASE=$db $T resource add --tenant bench --kind lb --zone bench.example.com --data "$d" >/dev/null
      k=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["eab_kid"])' "$creds")
      h=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["eab_hmac"])' "$creds")
      P=$(free_port)
      TENURE_LOG=warn TENURE_DATABASE=$db $T serve --data "$d" --listen 127.0.0.1:$P --admin-listen 127.0.0.1:$(free_port) >"$d.out" 2>"$d.log" &
      SP=$!
      for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null && break; sleep 0.1; done
      # Settled: tenure and PostgreSQL (autovacuum after the first pass's writes) both idle for a second.
      both() { echo $(( $(awk '{print $14+$15}' /proc/$SP/stat) + $(pg_cpu) )); }
      t0=$(date +%s)
      for i in $(seq 600); do a=$(both); sleep 1; [ $(( $(both) - a )) -le $((tick / 20)) ] && break; done
      echo "pg $mode settled after $(( $(date +%s) - t0 )) s"
      for c in $CS; do
        s0=$(awk '{print $14+$15}' /proc/$SP/stat); p0=$(pg_cpu)
        $T bench issue --n $N --concurrency $c --accounts 16 --challenge none --timeout 30s --json --directory https://127.0.0.1:$P/directory \
          --root "$d/root.pem" --eab-kid "$k" --eab-hmac "$h" --domain bench.example.com > "$W/b.json" || true
        s1=$(awk '{print $14+$15}' /proc/$SP/stat); p1=$(pg_cpu)
        python3 - "$mode" "$c" "$W/b.json" $((s1 - s0)) $((p1 - p0)) "$tick" "$N" <<'PY'
import json, sys
mode, c, path, s, p, tick, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
d = json.loads(open(path).read().strip().splitlines()[-1])
print(f"pg {mode:6} c={c:<3} {d['rate']:7.1f}/s  p50 {d.get('p50_ms', 0):.1f} ms  tenure {s*1000/tick/n:.3f} ms/iss  postgres {p*1000/tick/n:.3f} ms/iss  total {(s+p)*1000/tick/n:.3f} ms/iss")
PY
      done
      kill $SP; wait $SP 2>/dev/null || true; SP=
      [ -z "${LOGS:-}" ] || cp "$d.log" "$LOGS/pg-$run-$mode.log"
      psql "$TENURE_TEST_POSTGRES" -qc "DROP DATABASE r$run"
    done
  done
  exit 0
fi
# The sweep benchmark, built once (release; it links the engine only).
cargo bench -p tenure-engine --bench sweep --no-run 2>&1 | tail -1
SWEEP=$(ls -t target/release/deps/sweep-* | grep -v '\.d$' | head -1)
: > "$W/results"
# The machine is shared: a load generator someone else runs would be measured too (others).
for r in $(seq "$ROUNDS"); do
  for mode in empty seeded; do
    others
    seed=(); [ "$mode" = seeded ] && seed=(SEED_DATA="$SEED_DIR")
    echo "== round $r, $mode: server-cost.sh $N \"$CS\""
    env "${seed[@]}" examples/bench/server-cost.sh "$T" "$N" "$CS" | tee "$W/sc"
    grep '^c=' "$W/sc" | sed "s/^/$mode /" >> "$W/results"
    others
    echo "== round $r, $mode: sweep N=$SWEEP_N"
    sweep_env=(TENURE_SWEEP_N="$SWEEP_N")
    if [ "$mode" = seeded ]; then rm -rf "$W/sweep"; cp -a "$SEED_DIR" "$W/sweep"; sweep_env+=(TENURE_SWEEP_DATA="$W/sweep"); fi
    env "${sweep_env[@]}" "$SWEEP" --bench | tee "$W/sw"
    grep '^sweep:' "$W/sw" | sed "s/^/$mode /" >> "$W/results"
    rm -rf "$W/sweep"
  done
done
echo "== means over $ROUNDS rounds"
python3 - "$W/results" <<'PY'
import re, sys, collections
cost, rate, sweep = collections.defaultdict(list), collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    mode, rest = line.split(' ', 1)
    m = re.match(r'c=(\d+) rate/p50 ([\d.]+) \S+\s+server ([\d.]+) ms/iss', rest)
    if m:
        cost[(mode, m[1])].append(float(m[3])); rate[(mode, m[1])].append(float(m[2]))
    m = re.search(r'\(([\d.]+) renewals/s', rest)
    if m:
        sweep[mode].append(float(m[1]))
mean = lambda v: sum(v) / len(v) if v else float('nan')
print(f"{'':24} {'empty':>24} {'seeded':>24} {'change':>8}")
for c in sorted({c for _, c in cost}, key=int):
    e, s = cost[('empty', c)], cost[('seeded', c)]
    print(f"{'server ms/issuance c=' + c:24} {', '.join(f'{x:.3f}' for x in e):>24} {', '.join(f'{x:.3f}' for x in s):>24} {100 * (mean(s) / mean(e) - 1):+7.1f}%")
    e, s = rate[('empty', c)], rate[('seeded', c)]
    print(f"{'issuances/s c=' + c:24} {', '.join(f'{x:.0f}' for x in e):>24} {', '.join(f'{x:.0f}' for x in s):>24} {100 * (mean(s) / mean(e) - 1):+7.1f}%")
e, s = sweep['empty'], sweep['seeded']
print(f"{'sweep renewals/s':24} {', '.join(f'{x:.0f}' for x in e):>24} {', '.join(f'{x:.0f}' for x in s):>24} {100 * (mean(s) / mean(e) - 1):+7.1f}%")
PY
