#!/usr/bin/env bash
# Issue 15 measurements (destination politeness). Runs pipeline up
# --embedded-nats on loopback ports 18xxx, loadgen and
# scripts/politeprobe as separate processes. Usage:
#   scripts/politeness-bench.sh rate|rate3|norate|nopolite|retryafter|circuit|ab
# Results go to reports/politeness/ (not committed). The README's
# "Politeness" figures came from these commands. ab needs PIPELINE_OLD, a
# pipeline binary built from the commit before politeness (ef7e3d8).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=reports/politeness; mkdir -p "$OUT"
BIN=$OUT/pipeline; LG=$OUT/loadgen; PROBE=$OUT/politeprobe
go build -o "$BIN" ./cmd/pipeline; go build -o "$LG" ./cmd/loadgen; go build -o "$PROBE" ./scripts/politeprobe
base() { cat <<YAML
nats: {port: 14222, monitor_port: -2}
runtime: {listen: 127.0.0.1:18788}
origin: {listen: 127.0.0.1:18080}
target: {listen: 127.0.0.1:18090}
executor:
  ops_listen: ""
  policy: {allow: ["127.0.0.1:18091", "127.0.0.1:18099"]}
YAML
}
base > "$OUT/base.yaml"
{ base; echo '  destinations: [{host: "127.0.0.1:18090", rate: 100, burst: 10}]'; } > "$OUT/rate.yaml"
{ base; echo '  retry_after_max: 1ms'; } > "$OUT/nopolite.yaml"
{ base; echo '  concurrency: 1'; } > "$OUT/oneslot.yaml"
{ base; echo '  circuit: {failures: 20, cooldown: 10s}'; } > "$OUT/circuit.yaml"
{ base; echo '  destinations: [{host: "127.0.0.1:18090", rate: 100000, burst: 1000}]'; } > "$OUT/fastrate.yaml"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
up() { # up BIN CONFIG [EXECUTORS]
  rm -rf "$OUT/data"
  "$1" up --embedded-nats --config "$2" --data-dir "$OUT/data" --executors "${3:-1}" --log-level warn & PIDS+=($!)
  for _ in $(seq 50); do curl -fs -o /dev/null 127.0.0.1:18080/readyz && break; sleep 0.2; done
}
down() { cleanup; PIDS=(); }
O=ws://127.0.0.1:18080/ws
burst() { "$LG" --origin $O --concurrency 1000 --requests 1000 --warmup 0 --no-progress \
  --target-url 'http://127.0.0.1:18090/limited?rate=100' "$@"; }
hosts() { curl -s 127.0.0.1:18080/api/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["top_hosts"])'; }
case "${1:-}" in
rate) up "$BIN" "$OUT/rate.yaml"; for i in 1 2 3; do burst --json "$OUT/rate$i.json"; done; hosts ;;
rate3)
  up "$BIN" "$OUT/rate.yaml" 0
  for i in 1 2 3; do
    "$BIN" executor --nats nats://127.0.0.1:14222 --config "$OUT/rate.yaml" --id ex$i --ops-listen 127.0.0.1:1919$i --log-level warn & PIDS+=($!)
  done
  sleep 3
  for i in 1 2 3; do burst --json "$OUT/rate3-$i.json"; done
  # An executor process killed (-9) while it holds leased slots and jobs:
  burst --timeout 120s --json "$OUT/rate3-kill.json" & B=$!
  sleep 4; kill -9 "${PIDS[2]}"; wait $B ;;
norate) up "$BIN" "$OUT/base.yaml"; burst --json "$OUT/norate.json"; hosts ;;
nopolite) up "$BIN" "$OUT/nopolite.yaml"; burst --json "$OUT/nopolite.json" ;;
retryafter)
  up "$BIN" "$OUT/oneslot.yaml"
  mkdir -p "$OUT/www"; echo hi > "$OUT/www/index.html"
  python3 -m http.server 18091 --bind 127.0.0.1 --directory "$OUT/www" >/dev/null 2>&1 & PIDS+=($!)
  sleep 1
  for k in a b c; do
    "$PROBE" ra -origin $O -held "http://127.0.0.1:18090/flaky?key=$k&fail=1&retry_after=2" -other http://127.0.0.1:18091/
  done ;;
circuit)
  up "$BIN" "$OUT/circuit.yaml"
  "$PROBE" lat -origin $O -url http://127.0.0.1:18099/ -n 30           # opens the circuit
  "$PROBE" lat -origin $O -url http://127.0.0.1:18099/ -n 1000 -par 1
  "$PROBE" lat -origin $O -url http://127.0.0.1:18099/ -n 1000 -par 100
  "$PROBE" lat -origin $O -url 'http://127.0.0.1:18090/delay?ms=0' -n 1000 -par 1  # the same path, a 200
  mkdir -p "$OUT/www"; echo hi > "$OUT/www/index.html"
  python3 -m http.server 18099 --bind 127.0.0.1 --directory "$OUT/www" >/dev/null 2>&1 & PIDS+=($!)
  sleep 11                                                             # the cooldown
  "$PROBE" lat -origin $O -url http://127.0.0.1:18099/ -n 20
  curl -s 127.0.0.1:18080/metrics | grep '^pipeline_executor_circuits_open' ;;
ab)
  : "${PIPELINE_OLD:?build the commit before politeness and set PIPELINE_OLD to it}"
  for round in 1 2 3 4 5 6 7; do
    for v in A B R; do
      case $v in A) b=$PIPELINE_OLD c=base;; B) b=$BIN c=base;; R) b=$BIN c=fastrate;; esac
      up "$b" "$OUT/$c.yaml"
      "$LG" --origin $O --concurrency 100 --requests 20000 --target-url 'http://127.0.0.1:18090/delay?ms=0' \
        --no-progress --json "$OUT/ab-$v-$round.json" >/dev/null
      down
      python3 -c "import json; d=json.load(open('$OUT/ab-$v-$round.json')); print('$v', $round, round(d['throughput_rps']))"
    done
  done ;;
*) echo "usage: $0 rate|rate3|norate|nopolite|retryafter|circuit|ab" >&2; exit 2 ;;
esac
