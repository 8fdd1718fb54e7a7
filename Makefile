# postrotate — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
MODULES := payload messages executor worker coordinator examples/integration
PKGS := $(foreach m,$(MODULES),./$(m)/...)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 10s
BENCHCOUNT ?= 6

.DEFAULT_GOAL := help
.PHONY: help build build-windows run test test-short lint fmt bench fuzz clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/postrotate and bin/postrotate-worker
	@mkdir -p bin
	cd coordinator && $(GO) build -ldflags "-X github.com/postrotate/postrotate/coordinator/cli.Version=$(VERSION)" -o ../bin/postrotate ./cmd/postrotate
	cd worker && $(GO) build -ldflags "-X main.Version=$(VERSION)" -o ../bin/postrotate-worker ./cmd/postrotate-worker

build-windows: ## Cross-compile bin/postrotate-worker.exe for Windows
	@mkdir -p bin
	cd worker && GOOS=windows GOARCH=amd64 $(GO) build -ldflags "-X main.Version=$(VERSION)" -o ../bin/postrotate-worker.exe ./cmd/postrotate-worker

run: build ## Run a demo rotation (examples/inventory.yaml) with the embedded defaults
	./bin/postrotate rotate --inventory examples/inventory.yaml --user svc-app --verbose

test: lint ## Run every test (race detector on), after gofmt, go vet and staticcheck
	$(GO) test -race -count=1 $(PKGS)
	$(MAKE) build build-windows
	./bin/postrotate validate --inventory examples/inventory.yaml

test-short: ## Run the tests without the race detector and the lint
	$(GO) test -count=1 $(PKGS)

lint: ## gofmt, go vet (Linux and Windows), staticcheck
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	GOOS=windows $(GO) vet ./executor/... ./worker/... ./payload/... ./messages/...
	$(GO) run $(STATICCHECK) $(PKGS)

fmt: ## Format the code
	gofmt -w $(MODULES)

bench: ## Run the benchmarks (BENCHCOUNT times, for benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) $(PKGS)

fuzz: ## Run each fuzz test for FUZZTIME
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./payload/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTask$$' -fuzztime $(FUZZTIME) ./messages/
	$(GO) test -run '^$$' -fuzz '^FuzzHostToken$$' -fuzztime $(FUZZTIME) ./messages/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./coordinator/inventory/

clean: ## Remove build outputs
	rm -rf bin
