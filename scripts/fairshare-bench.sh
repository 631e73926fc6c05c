#!/usr/bin/env bash
# Issue 12 measurements: hanging host, deep backlog, 1/10/100 origins.
# Runs pipeline up --embedded-nats + pipeline origin --origin-id o2 on
# loopback ports 27xxx, and loadgen as separate processes. Usage:
#   scripts/fairshare-bench.sh hang|backlog [N]|ab|origins N RATE
# Results go to reports/fairshare/. The README's figures came from these
# commands (ab: run it on this branch and on main, alternately).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=reports/fairshare; mkdir -p "$OUT"
BIN=${PIPELINE_BIN:-$OUT/pipeline}; LG=$OUT/loadgen
go build -o "$OUT/pipeline" ./cmd/pipeline; go build -o "$LG" ./cmd/loadgen
cat > "$OUT/up.yaml" <<YAML
nats: {port: 27422, monitor_port: 27822}
origin: {listen: 127.0.0.1:27080}
executor: {ops_listen: 127.0.0.1:27091, policy: {allow: ["127.0.0.1:27095"]}}
runtime: {listen: 127.0.0.1:27788}
target: {listen: 127.0.0.1:27090}
YAML
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() {
  rm -rf "$OUT/data"
  "$BIN" up --embedded-nats --config "$OUT/up.yaml" --data-dir "$OUT/data" --log-level warn & PIDS+=($!)
  for _ in $(seq 50); do curl -fs -o /dev/null 127.0.0.1:27080/healthz && break; sleep 0.2; done
  "$BIN" origin --origin-id o2 --listen 127.0.0.1:27081 --nats nats://127.0.0.1:27422 --log-level warn & PIDS+=($!)
  for _ in $(seq 50); do curl -fs -o /dev/null 127.0.0.1:27081/healthz && break; sleep 0.2; done
}
T=http://127.0.0.1:27090
case "${1:-}" in
hang)
  # A host that accepts connections and never answers.
  python3 -c 'import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(("127.0.0.1",27095));s.listen(4096);c=[]
while True: c.append(s.accept()[0])' & PIDS+=($!)
  start
  "$LG" --origin ws://127.0.0.1:27080/ws --concurrency 20 --requests 200 --target-url "$T/delay?ms=14" \
    --noisy-target-url http://127.0.0.1:27095/ --noisy-concurrency 600 --noisy-requests 600 \
    --noisy-fetch-timeout 30s --json "$OUT/hang.json" --html "$OUT/hang.html"
  ;;
backlog)
  N=${2:-50000}
  O1=("$LG" --origin ws://127.0.0.1:27080/ws --concurrency "$N" --requests "$N" --warmup 0 --target-url "$T/delay?ms=100" --timeout 10m --no-progress)
  start; "${O1[@]}" --json "$OUT/backlog-o1-alone.json"; cleanup; PIDS=()
  start
  "${O1[@]}" --json "$OUT/backlog-o1.json" & O1PID=$!
  sleep 10
  "$LG" --origin ws://127.0.0.1:27081/ws --concurrency 20 --requests 200 --target-url "$T/delay?ms=14" --json "$OUT/backlog-o2.json"
  wait "$O1PID"
  ;;
ab)
  start
  "$LG" --origin ws://127.0.0.1:27080/ws --concurrency 100 --requests 20000 --target-url "$T/delay?ms=0" --json "$OUT/ab-$(git rev-parse --short HEAD).json"
  ;;
origins)
  # One executor process; N simulated origins, idle (RATE 0) or busy: its
  # CPU (from /proc) and NATS messages (the server's /connz) over 20 s.
  N=$2; RATE=$3
  go build -o "$OUT/simorigins" ./scripts/simorigins
  rm -rf "$OUT/data"
  "$BIN" up --embedded-nats --executors 0 --config "$OUT/up.yaml" --data-dir "$OUT/data" --log-level warn & PIDS+=($!)
  for _ in $(seq 50); do curl -fs -o /dev/null 127.0.0.1:27080/healthz && break; sleep 0.2; done
  "$BIN" executor --nats nats://127.0.0.1:27422 --ops-listen "" --log-level warn & EX=$!; PIDS+=($EX)
  sleep 1
  "$OUT/simorigins" -origins "$N" -rate "$RATE" -duration 35s & PIDS+=($!)
  sleep 8
  conn() { curl -s '127.0.0.1:27822/connz?limit=1000' | python3 -c 'import json,sys
for c in json.load(sys.stdin)["connections"]:
    if "executor" in (c.get("name") or ""): print(c["in_msgs"], c["out_msgs"])'; }
  cpu() { awk '{print $14+$15}' "/proc/$EX/stat"; }
  C0=$(cpu); T0=$(conn); sleep 20; C1=$(cpu); T1=$(conn)
  python3 -c "import sys;c0,c1,i0,o0,i1,o1=map(int,sys.argv[1:]);print(f'origins=$N rate=$RATE cpu={(c1-c0)/20:.1f}% in_msgs/s={(i1-i0)/20:.0f} out_msgs/s={(o1-o0)/20:.0f}')" "$C0" "$C1" $T0 $T1
  ;;
*) echo "usage: $0 hang|backlog [N]|ab|origins N RATE" >&2; exit 2 ;;
esac
