#!/usr/bin/env bash
# A local trial of tenure on a laptop with no public DNS: a certificate for a
# made-up name, through a real ACME client, in about ten seconds.
#
# Validation never reads /etc/hosts (a CA must ask the DNS), so a name like
# www.tenure.test cannot be proven against the system resolver. This script
# starts a mock DNS server (pebble-challtestsrv, Debian package `pebble`) that
# answers 127.0.0.1 for every name, a tenure server of its own that asks it
# (--dns-resolver) and connects to port $HTTP01 for http-01, and lego, which
# answers the challenge there. Nothing runs as root; everything lives in a
# temporary directory that is removed at the end (kept with KEEP=1).
#
# Usage: examples/try-locally.sh [NAME]        (default www.tenure.test)
# Environment: TENURE (the binary; default `tenure` on PATH, else
# target/release/tenure), and the ports ACME (14100), ADMIN (14101),
# METRICS (14102), HTTP01 (5002), DNS (8053), DNS_MANAGEMENT (8055).
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:-www.tenure.test}
if [ -n "${TENURE:-}" ]; then
  tenure=$TENURE
elif command -v tenure >/dev/null 2>&1; then
  tenure=tenure
elif [ -x target/release/tenure ]; then
  tenure=$PWD/target/release/tenure
else
  echo "no tenure binary: run \`cargo install --path .\` (or \`cargo build --release\`) first" >&2
  exit 1
fi
for cmd in pebble-challtestsrv lego openssl curl; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "needs $cmd (apt install pebble lego openssl curl)" >&2; exit 1; }
done
acme=${ACME:-14100} admin=${ADMIN:-14101} metrics=${METRICS:-14102}
http01=${HTTP01:-5002} dns=${DNS:-8053} dns_management=${DNS_MANAGEMENT:-8055}

work=$(mktemp -d "${TMPDIR:-/tmp}/tenure-try.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The mock DNS: every A query is answered 127.0.0.1, AAAA nothing.
pebble-challtestsrv -dns01 "127.0.0.1:$dns" -http01 "" -https01 "" -tlsalpn01 "" \
  -management "127.0.0.1:$dns_management" -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$work/dns.log" 2>&1 &
pids+=($!)

"$tenure" serve --data "$work/tenure-data" --listen "127.0.0.1:$acme" --admin-listen "127.0.0.1:$admin" \
  --metrics-listen "127.0.0.1:$metrics" --dns-resolver "127.0.0.1:$dns" --http01-port "$http01" >"$work/serve.log" 2>&1 &
pids+=($!)

directory=https://127.0.0.1:$acme/directory
root=$work/tenure-data/root.pem
for _ in $(seq 1 300); do
  [ -s "$root" ] && curl -sf --cacert "$root" "$directory" >/dev/null 2>&1 && break
  kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/serve.log" >&2; echo "tenure serve did not start" >&2; exit 1; }
  sleep 0.1
done
curl -sf --cacert "$root" "$directory" >/dev/null || { cat "$work/serve.log" >&2; exit 1; }
echo "tenure serves $directory (root certificate $root)"

# lego answers http-01 on $HTTP01; tenure connects there because of --http01-port.
LEGO_CA_CERTIFICATES=$root lego --server "$directory" --accept-tos --email you@example.com \
  --domains "$name" --http --http.port "127.0.0.1:$http01" --path "$work/lego" run >"$work/lego.log" 2>&1 \
  || { cat "$work/lego.log" >&2; echo "lego failed; tenure's log:" >&2; tail -20 "$work/serve.log" >&2; exit 1; }

chain=$work/lego/certificates/$name.crt
openssl verify -CAfile "$root" -untrusted "$chain" "$chain" >/dev/null
echo "certificate for $name, verified against the root:"
openssl x509 -in "$chain" -noout -subject -issuer -enddate -ext subjectAltName
