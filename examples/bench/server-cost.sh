#!/usr/bin/env bash
# What one issuance costs tenure, for A/B comparisons of two builds:
#
#   examples/bench/server-cost.sh [TENURE_BIN] [N] ["C1 C2"]
#
# Starts `tenure serve` on a fresh data directory with a tenant whose zone is held,
# runs `tenure bench issue` N times at each concurrency, and prints the rate and p50,
# the server's CPU ms per issuance (/proc/PID/stat), the load generator's CPU ms per
# issuance (including its setup) and the server's voluntary context switches per
# issuance. Alternate the two builds (A B A B): this machine's speed drifts.
#
# SEED_DATA=DIR starts from a copy of DIR (a registry seeded by `tenure bench
# seed`, issue 17) instead of an empty directory. Either way the load starts
# once the server's first background pass is over (its CPU below 5% for a
# second; the wait and its CPU are printed), so what is measured is requests.
#
# PERF=FILE records a perf profile of the server during each load
# (FILE.c16, FILE.c64; `perf report -i FILE.c64 --no-children --sort dso,sym`);
# PERF_ARGS adds to perf record's arguments (e.g. "--call-graph dwarf,16384 -F 499").
set -euo pipefail
T=${1:-target/release/tenure}; N=${2:-3000}; CS=${3:-"16 64"}
W=$(mktemp -d); DATA=$W/d
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(free_port); A=$(free_port); M=$(free_port)
if [ -n "${SEED_DATA:-}" ]; then cp -a "$SEED_DATA" $DATA; fi
# (Builds from before `tenure init` made the directory in `tenant add`.)
$T init --data $DATA >/dev/null 2>&1 || true
CREDS=$($T tenant add bench --permit bench.example.com --data $DATA --json)
$T resource add --tenant bench --kind lb --zone bench.example.com --data $DATA >/dev/null
K=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["eab_kid"])' "$CREDS")
H=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["eab_hmac"])' "$CREDS")
TENURE_LOG=${TENURE_LOG:-warn} TENURE_METRICS_LISTEN=127.0.0.1:$M $T serve --data $DATA --listen 127.0.0.1:$P --admin-listen 127.0.0.1:$A >$W/out 2>$W/log &
SP=$!
trap "kill $SP; wait $SP 2>/dev/null; rm -rf $W" EXIT
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null && break; sleep 0.1; done
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$SP/stat; }
w0=$(cpu); t0=$(date +%s.%N)
for i in $(seq 600); do a=$(cpu); sleep 1; [ $(( $(cpu) - a )) -le $((tick / 20)) ] && break; done
python3 -c "print('settled after %.1f s, server CPU meanwhile %.2f s' % ($(date +%s.%N) - $t0, ($(cpu) - $w0) / $tick))"
for c in $CS; do
  s0=$(awk '{print $14+$15}' /proc/$SP/stat); x0=$(cat /proc/$SP/task/*/status | awk '/voluntary_ctxt/ {s+=$2} END {print s}')
  PP=
  if [ -n "${PERF:-}" ]; then perf record -q -F 2999 ${PERF_ARGS:-} -p $SP -o $PERF.c$c 2>/dev/null & PP=$!; sleep 0.5; fi
  /usr/bin/time -f "%U %S" -o $W/ct $T bench issue --n $N --concurrency $c --accounts 16 --challenge none --timeout 30s --json \
     --directory https://127.0.0.1:$P/directory --root $DATA/root.pem --eab-kid $K --eab-hmac $H --domain bench.example.com > $W/b.json
  if [ -n "$PP" ]; then kill -INT $PP; wait $PP 2>/dev/null || true; fi
  s1=$(awk '{print $14+$15}' /proc/$SP/stat); x1=$(cat /proc/$SP/task/*/status | awk '/voluntary_ctxt/ {s+=$2} END {print s}')
  rate=$(tail -1 $W/b.json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["rate"],1), d.get("p50_ms",d.get("p50","")))')
  cl=$(awk '{print $1+$2}' $W/ct)
  python3 -c "print('c=$c rate/p50 $rate  server %.3f ms/iss  client %.3f ms/iss  ctxsw/iss %.1f' % (($s1-$s0)*1000/$tick/$N, $cl*1000/$N, ($x1-$x0)/$N))"
done
grep VmHWM /proc/$SP/status
