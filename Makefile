# pgark: build, tests and tooling. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
GO ?= go
# Integration packages start PostgreSQL clusters and an S3 server; on small CI machines
# (2 cores) running them at the same time only makes timeouts likelier: one test binary at
# a time. Override with `make test GOTEST_P=2`.
GOTEST_P ?= 1
GOTEST_TIMEOUT ?= 25m

.PHONY: all build deps test test-short vet lint staticcheck bench demo clean soak fuzz docs man

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/pgark ./cmd/pgark

deps:
	bash .ci/deps.sh

# The Markdown reference (committed; TestReferenceUpToDate fails when it is
# stale) and the man pages (not committed), both made from cmd/pgark's
# command list, option table and exit code table.
docs:
	$(GO) run ./cmd/pgark gen-docs docs/reference

man:
	$(GO) run ./cmd/pgark gen-man bin/man/man1

vet:
	$(GO) vet ./...

# Every tier. PGARK_TEST_REQUIRE=1 turns a missing test dependency into a
# failure, so that this target (and CI, which runs it) can never pass by skipping.
test: deps
	$(GO) vet ./...
	PGARK_TEST_REQUIRE=1 $(GO) test -count=1 -p $(GOTEST_P) -timeout $(GOTEST_TIMEOUT) ./...

# The unit tier: nothing installed, about a minute.
test-short:
	$(GO) test -short -count=1 ./...

lint:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

# Native Go fuzzers of every parser that reads hostile input, one after the
# other, FUZZTIME each (e.g. `make fuzz FUZZTIME=10m`). Crashers land in the
# package's testdata/fuzz/<Fuzzer>/ and then run with every `go test`.
FUZZTIME ?= 1m
FUZZ_PARALLEL ?= 1
# Minimization budget per new input, in executions: a time budget lets the
# slow backup fuzzers (FuzzExtract) spend most of their time minimizing.
FUZZMINIMIZE ?= 500x
FUZZERS := wal:FuzzParseHeader wal:FuzzParseHistory wal:FuzzParseTimelinesMeta \
	basebackup:FuzzDemux tarstream:FuzzTarScan restore:FuzzExtract restore:FuzzExtractValidate \
	manifest:FuzzManifest restore:FuzzMeta repo:FuzzRepoJSON \
	cmd/pgark:FuzzParseConfig cmd/pgark:FuzzParseLocation

fuzz:
	@set -e; for f in $(FUZZERS); do \
		pkg=$${f%%:*}; name=$${f##*:}; \
		echo "== $$name (./$$pkg, $(FUZZTIME))"; \
		nice -n 10 $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) -parallel $(FUZZ_PARALLEL) ./$$pkg/; \
	done

bench:
	bash .ci/deps.sh --bench
	bash bench/wal.sh
	bash bench/replay.sh

demo: deps build
	bash scripts/demo.sh

clean:
	rm -rf bin

# The long reliability runs: a 10-minute soak (pgbench at full speed into S3,
# backups, retain and verify meanwhile, a PITR at the end, RSS and CPU per
# process), 50 kill -9 of each command, and 60 s of S3 faults. CI runs the
# same tests shortened (45 s, 10 kills).
SOAK_SECONDS ?= 600
KILL_LOOPS ?= 50
FAULT_SECONDS ?= 60
soak: deps
	SOAK_SECONDS=$(SOAK_SECONDS) KILL_LOOPS=$(KILL_LOOPS) FAULT_SECONDS=$(FAULT_SECONDS) \
		$(GO) test -count=1 -v -timeout 90m -run 'TestSoak|TestKill9Loops|TestFaultsArchiveRecoverBackup|TestPushAheadKill9' ./integration/
