# pgark: build, tests and tooling. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
GO ?= go
# Integration packages start PostgreSQL clusters and an S3 server; on small CI machines
# (2 cores) running them at the same time only makes timeouts likelier: one test binary at
# a time. Override with `make test GOTEST_P=2`.
GOTEST_P ?= 1
GOTEST_TIMEOUT ?= 25m

.PHONY: all build deps test test-short vet lint staticcheck bench demo clean soak fuzz docs man dist

all: build

# Version stamping (pgark version): the nearest v* tag (v1.2.3, or
# v1.2.3-4-gabcdef0 past it), else 0.0.0-dev; the commit and the build time
# in UTC. Each can be set: make dist VERSION=v1.2.3.
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo 0.0.0-dev)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
STAMP := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(STAMP)" -o bin/pgark ./cmd/pgark

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
	rm -rf bin dist

# ---------------------------------------------------------------- releases
# make dist: static binaries for DIST_ARCHES, their man pages and shell
# completions, .deb and .rpm packages (nfpm, packaging/nfpm.yaml) and
# SHA256SUMS, all in DIST (git-ignored). nfpm runs as a Go module at a pinned
# version: nothing to install, and go.mod does not carry its dependencies.
DIST ?= dist
DIST_ARCHES ?= amd64 arm64
NFPM ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
# The package version, ordered as dpkg and rpm compare: v1.2.3 -> 1.2.3,
# v1.2.3-rc1 -> 1.2.3~rc1 (before 1.2.3), v1.2.3-4-gabcdef0 (4 commits after
# the tag) -> 1.2.3+git4.abcdef0 (after it), -dirty -> +dirty.
PKG_VERSION ?= $(shell echo '$(VERSION)' | sed -E 's/^v//; s/-([0-9]+)-g([0-9a-f]+)/+git\1.\2/; s/-dirty$$/+dirty/; s/-/~/g')

dist:
	@test -n "$(DIST)" || { echo "make dist: DIST is empty"; exit 2; }
	rm -rf $(DIST)/build $(DIST)/pgark[-_]* $(DIST)/SHA256SUMS
	mkdir -p $(DIST)/build/man $(DIST)/build/completions
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(STAMP)" -o $(DIST)/build/pgark-host ./cmd/pgark
	$(DIST)/build/pgark-host gen-man $(DIST)/build/man && gzip -9n $(DIST)/build/man/*.1
	for sh in bash zsh fish; do $(DIST)/build/pgark-host completion $$sh > $(DIST)/build/completions/pgark.$$sh || exit 1; done
	rm $(DIST)/build/pgark-host
	set -e; for arch in $(DIST_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w $(STAMP)" \
			-o $(DIST)/pgark-$(VERSION)-linux-$$arch ./cmd/pgark; \
		for pkg in deb rpm; do \
			PGARK_BIN=$(DIST)/pgark-$(VERSION)-linux-$$arch PGARK_BUILD=$(DIST)/build PGARK_VERSION=$(PKG_VERSION) PGARK_ARCH=$$arch \
				$(NFPM) package --config packaging/nfpm.yaml --packager $$pkg --target $(DIST)/; \
		done; \
	done
	rm -rf $(DIST)/build
	cd $(DIST) && sha256sum pgark* > SHA256SUMS && cat SHA256SUMS

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
