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
# The sweep benchmark, built once (release; it links the engine only).
cargo bench -p tenure-engine --bench sweep --no-run 2>&1 | tail -1
SWEEP=$(ls -t target/release/deps/sweep-* | grep -v '\.d$' | head -1)
: > "$W/results"
# The machine is shared: a load generator someone else runs would be measured too.
others() { while pgrep -f 'bench issue' >/dev/null; do sleep 5; done; }
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
