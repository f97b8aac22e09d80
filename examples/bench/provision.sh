#!/usr/bin/env bash
# Provisioning at scale, and what it does to ACME issuance beside it:
#
#   examples/bench/provision.sh [TENURE_BIN] [N] [ACME_N] [platform|recipient] [ACME_RATE]
#
# Starts `tenure serve` on a fresh data directory (tenant `bench` holding the
# zone bench.example.com for ACME, permitted prov.example.com for the burst),
# then measures, one after the other:
#   1. ACME alone: `tenure bench issue` ACME_N issuances at concurrency 16,
#      started at ACME_RATE a second (a steady load, as a platform's clients
#      make; an unpaced run saturates both cores by itself): its p99;
#   2. provisioning alone: `tenure bench provision` N resources with
#      certificate=auto, added through the admin API at concurrency 16, until
#      every one is provisioned; the server's CPU ms per resource (/proc);
#   3. both at once: the same ACME run while another burst of N is provisioned.
# `platform` gives each resource a public-key (tenure certifies it); `recipient`
# an age recipient and a delivery-dir (tenure generates each key, encrypts it,
# and drops chain.pem and key.pem.age: the file writes are part of the cost).
set -euo pipefail
T=${1:-target/release/tenure}; N=${2:-10000}; AN=${3:-3000}; MODE=${4:-platform}; RATE=${5:-200}
# Extra `serve` flags, e.g. SERVE_FLAGS="--provisioning-rate 500".
SERVE_FLAGS=${SERVE_FLAGS:-}
W=$(mktemp -d); DATA=$W/d; DROPS=$W/drops; mkdir -p $DROPS
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(free_port); A=$(free_port); M=$(free_port)
$T init --data $DATA >/dev/null
CREDS=$($T tenant add bench --permit bench.example.com --permit prov.example.com --data $DATA --json)
$T resource add --tenant bench --kind lb --zone bench.example.com --data $DATA >/dev/null
K=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["eab_kid"])' "$CREDS")
H=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["eab_hmac"])' "$CREDS")
TENURE_LOG=warn TENURE_METRICS_LISTEN=127.0.0.1:$M $T serve --data $DATA --listen 127.0.0.1:$P --admin-listen 127.0.0.1:$A --delivery-root $DROPS $SERVE_FLAGS >$W/out 2>$W/log &
SP=$!
trap "kill $SP; wait $SP 2>/dev/null; rm -rf $W" EXIT
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$A) 2>/dev/null && break; sleep 0.1; done
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$SP/stat; }
extra=()
if [ "$MODE" = recipient ]; then
  age-keygen -o $W/identity 2>/dev/null
  extra=(--recipient "$(sed -n 's/^# public key: //p' $W/identity)" --delivery-dir $DROPS)
fi
acme() {
  $T bench issue --n $AN --rate $RATE --concurrency 16 --accounts 16 --challenge none --timeout 30s --json \
     --directory https://127.0.0.1:$P/directory --root $DATA/root.pem --eab-kid $K --eab-hmac $H --domain bench.example.com \
     | tail -1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print("ACME %d issuances: %.0f/s, p50 %.1f ms, p99 %.1f ms" % (d["completed"], d["rate"], d["p50_ms"], d["p99_ms"]))'
}
burst() {
  $T bench provision --n $N --concurrency 16 --admin https://127.0.0.1:$A --token-file $DATA/admin-token --root $DATA/root.pem \
     --tenant bench --domain prov.example.com "${extra[@]}"
}
echo "== 1. ACME alone"; acme
echo "== 2. provisioning alone ($MODE)"
c0=$(cpu); burst; c1=$(cpu)
python3 -c "print('server CPU %.3f ms per provisioned resource (POST, decision, key, signature, record, delivery, polls)' % (($c1-$c0)*1000/$tick/$N))"
echo "== 3. both at once"
burst > $W/burst.txt & BP=$!
acme
wait $BP; cat $W/burst.txt
grep VmHWM /proc/$SP/status
