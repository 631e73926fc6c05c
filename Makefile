# Everything needs only Go (see go.mod for the version).
GO ?= go
BIN := bin

.PHONY: up build test vet fuzz ci bench loadgen clean fault-run

## up: run the whole pipeline in one process (embedded NATS, origin, executors, runtime, target)
up:
	$(GO) run ./cmd/pipeline up --embedded-nats

## build: build pipeline and loadgen into ./bin
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## test: the test suite, with the race detector
test:
	$(GO) test -race ./...

## vet: static checks
vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

## fuzz: run every fuzz target for FUZZTIME (default 10000x: a count, not a
## duration, which Go 1.26 can fail at the boundary, go.dev/issue/75804)
FUZZTIME ?= 10000x
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench: Go benchmarks
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## fault-run: 10,000 jobs with an executor process killed (SIGKILL) mid-run
fault-run:
	FAULT_JOBS=10000 $(GO) test -count=1 -v -run ExecutorKilled ./internal/faults/

## ci: what .ci/run runs
ci: vet test fuzz

clean:
	rm -rf $(BIN) data

## scale-bench: throughput and p99 with 1, 2 and 4 executor processes against a 14 ms target
## (EXECUTORS="1 2 4" EXEC_CONCURRENCY=16 LOAD_CONCURRENCY=128 REQUESTS=10000; reports in reports/scale/)
.PHONY: scale-bench
scale-bench:
	GO=$(GO) scripts/scale-bench.sh
