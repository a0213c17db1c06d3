# pgark: build, tests and tooling. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
GO ?= go
# Integration packages start PostgreSQL clusters and an S3 server; on small CI machines
# (2 cores) running them at the same time only makes timeouts likelier: one test binary at
# a time. Override with `make test GOTEST_P=2`.
GOTEST_P ?= 1
GOTEST_TIMEOUT ?= 25m

.PHONY: all build deps test vet lint staticcheck bench demo clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/pgark ./cmd/pgark

deps:
	bash .ci/deps.sh

vet:
	$(GO) vet ./...

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -p $(GOTEST_P) -timeout $(GOTEST_TIMEOUT) ./...

lint:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

bench:
	bash .ci/deps.sh --bench
	bash bench/wal.sh

demo: deps build
	bash scripts/demo.sh

clean:
	rm -rf bin
