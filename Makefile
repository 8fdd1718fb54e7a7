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
.PHONY: help build build-windows run test test-short lint fmt bench fuzz fuzz-ci clean

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

# fuzz_all runs every fuzz test, as `go test -list` names them in the
# packages whose tests declare one, one after the other for $(1) each (a
# shell word, evaluated once the shell variable n holds the number of fuzz
# tests). Their corpora (testdata/fuzz/) run as plain tests in `make test`
# too. A new interesting input is minimized for at most 5s, so that the time
# goes to fuzzing.
define fuzz_all
set -euo pipefail; \
pkgs=$$(grep -rl --include='*_test.go' '^func Fuzz' $(MODULES) | xargs -n1 dirname | sort -u | sed 's|^|./|'); \
list=$$($(GO) test -list '^Fuzz' $$pkgs | awk '/^Fuzz/ { names = names " " $$1 } /^ok/ { if (names != "") print $$2 names; names = "" }'); \
n=$$(wc -w <<< "$$list"); n=$$((n - $$(wc -l <<< "$$list"))); \
if [ "$$n" -le 0 ]; then echo "no fuzz tests found"; exit 1; fi; \
fuzztime=$(1); \
while read -r pkg names; do \
  for name in $$names; do \
    echo "--- $$name ($$pkg, $$fuzztime)"; \
    $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$fuzztime -fuzzminimizetime 5s "$$pkg" </dev/null; \
  done; \
done <<< "$$list"
endef

fuzz: ## Run every fuzz test for FUZZTIME each (default 10s; try FUZZTIME=1m)
	@$(call fuzz_all,$(FUZZTIME))

# CI fuzzes for FUZZ_CI_SECONDS in all, shared by the fuzz tests (5s each at
# least): about 2.5 minutes with the builds.
FUZZ_CI_SECONDS := 110

fuzz-ci: ## Run every fuzz test briefly, as CI does after make test (110s in all)
	@$(call fuzz_all,$$(( $(FUZZ_CI_SECONDS) / n > 5 ? $(FUZZ_CI_SECONDS) / n : 5 ))s)

clean: ## Remove build outputs
	rm -rf bin
