#!/usr/bin/env bash
# scale-bench: how throughput and latency grow with executor processes.
#
# Builds pipeline and loadgen, starts `pipeline up --embedded-nats --executors 0`
# (NATS, origin, test target; no executors) on free ports with a temporary
# data dir, then for each count in EXECUTORS starts that many
# `pipeline executor` processes (EXEC_CONCURRENCY fetches each, so the
# executor count is what limits throughput against a DELAY_MS target), runs
# loadgen against the origin, stops the executors (SIGTERM, drained), and
# finally prints one table row per count. Everything it started is stopped
# on exit, also on Ctrl-C or failure.
#
#   make scale-bench
#   EXECUTORS="1 2 4 8" REQUESTS=20000 scripts/scale-bench.sh
#
# Output: $OUT/scale-N.json (PROTOCOL.md §5; default OUT=reports/scale) and $OUT/scale-N.html (loadgen's
# report with plots) per count, $OUT/table.txt.
set -euo pipefail

GO=${GO:-go}
EXECUTORS=${EXECUTORS:-"1 2 4"}
EXEC_CONCURRENCY=${EXEC_CONCURRENCY:-16}
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-128}
REQUESTS=${REQUESTS:-10000}
DELAY_MS=${DELAY_MS:-14}
OUT=${OUT:-reports/scale}

cd "$(dirname "$0")/.."
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/scale-bench.XXXXXX")
bin="$work/bin"
pids=()

cleanup() {
	local code=$?
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_log FILE LINE VALUE: the first match of regex VALUE on the first
# line of FILE matching regex LINE, waiting up to 30 s for such a line.
wait_log() {
	local i line
	for i in $(seq 300); do
		line=$(grep -E "$2" "$1" 2>/dev/null | head -1 || true)
		if [ -n "$line" ]; then
			grep -oE "$3" <<<"$line" | head -1
			return 0
		fi
		sleep 0.1
	done
	echo "scale-bench: no line matching '$2' in $1 after 30 s:" >&2
	cat "$1" >&2
	return 1
}

echo "building pipeline and loadgen..."
$GO build -o "$bin/" ./cmd/pipeline ./cmd/loadgen

"$bin/pipeline" up --embedded-nats --executors 0 --data-dir "$work/data" \
	--nats-port -1 --monitor-port -2 --listen 127.0.0.1:0 --target-listen 127.0.0.1:0 \
	--no-runtime --log-format json --log-level info 2>"$work/up.log" &
pids+=($!)
nats=$(wait_log "$work/up.log" 'embedded NATS listening' 'nats://127\.0\.0\.1:[0-9]+')
ws=$(wait_log "$work/up.log" 'origin listening' 'ws://127\.0\.0\.1:[0-9]+/ws')
target=$(wait_log "$work/up.log" 'test target listening' 'http://127\.0\.0\.1:[0-9]+')
echo "pipeline up: nats $nats, origin $ws, target $target"

for n in $EXECUTORS; do
	epids=()
	for i in $(seq "$n"); do
		log="$work/exec-$n-$i.log"
		PIPELINE_EXECUTOR_POLICY_ALLOW="${target#http://}" "$bin/pipeline" executor --nats "$nats" \
			--concurrency "$EXEC_CONCURRENCY" --id "scale-$n-$i" --log-format json --log-level info 2>"$log" &
		epids+=($!)
		pids+=($!)
	done
	for i in $(seq "$n"); do wait_log "$work/exec-$n-$i.log" 'executor consuming jobs' 'consuming' >/dev/null; done
	echo "== $n executor process(es) x $EXEC_CONCURRENCY, loadgen concurrency $LOAD_CONCURRENCY, $REQUESTS fetches of ${DELAY_MS} ms"
	"$bin/loadgen" --origin "$ws" --concurrency "$LOAD_CONCURRENCY" --requests "$REQUESTS" \
		--target-url "$target/delay?ms=$DELAY_MS" --no-progress --quiet \
		--json "$OUT/scale-$n.json" --html "$OUT/scale-$n.html"
	for pid in "${epids[@]}"; do kill -TERM "$pid"; done
	for pid in "${epids[@]}"; do wait "$pid" || true; done
done

files=()
for n in $EXECUTORS; do files+=("$OUT/scale-$n.json"); done
{
	echo "machine: $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || uname -m)), $($GO env GOOS)/$($GO env GOARCH), $($GO version | cut -d' ' -f3)"
	echo "target: ${DELAY_MS} ms; executor concurrency $EXEC_CONCURRENCY; loadgen concurrency $LOAD_CONCURRENCY; $REQUESTS fetches per row"
	echo
	$GO run ./scripts/scaletable "${files[@]}"
} | tee "$OUT/table.txt"
echo "reports: $OUT/scale-*.html"
