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
.PHONY: help build build-windows run test-deps test test-unit test-short lint fmt bench fuzz fuzz-ci clean images images-context compose-up compose-down test-integration

# Container images (make images): static binaries on scratch, and a Debian
# machine image whose base is imported from an mmdebstrap root, so that no
# registry is needed. With a registry, official bases work too:
#   make images SCRATCH_BASE=gcr.io/distroless/static-debian12 MACHINE_BASE=debian:bookworm-slim
IMAGE_TAG ?= dev
IMAGE_REPO ?= postrotate
SCRATCH_BASE ?= scratch
DEBIAN_IMAGE ?= postrotate-debian:bookworm
MACHINE_BASE ?= $(DEBIAN_IMAGE)
DOCKER ?= docker
COMPOSE ?= docker-compose
DOCKER_BUILD = $(DOCKER) build --pull=false --build-arg BASE=$(SCRATCH_BASE)
IMAGE_CTX := build/docker
ROOTFS_TAR := build/debian-bookworm.tar
STATIC_GO = CGO_ENABLED=0 $(GO) build -trimpath

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

# What the tests need on a fresh Debian machine of this kind, installed
# when apt-get is there (as root, or through sudo): python3
# (/usr/bin/python3), bash, coreutils' base64, procps' ps and make for the
# scripts; a real OpenSSH sshd on a loopback port and a dedicated test user
# (openssh-server, passwd's useradd/chpasswd) for the SSH executor; sudo
# and PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) for the
# built-in rotators, whose tests start their own clusters with initdb;
# mmdebstrap and ca-certificates for the images of the container suite;
# node and java (nodejs, default-jdk-headless, when not on PATH already)
# for the masking test that checks its encoders against those languages'.
# openssh-server can be installed while its privilege-separation user
# "sshd" is missing (then sshd refuses to start): it is created here.
TEST_PACKAGES := python3 bash coreutils procps make git openssh-server openssh-client passwd sudo postgresql mmdebstrap ca-certificates

test-deps: ## Install what the tests need (Debian: apt-get; as root or through sudo)
	@set -e; sudo=""; if [ "$$(id -u)" -ne 0 ]; then sudo="sudo"; fi; \
	if command -v apt-get >/dev/null; then \
	  missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  command -v node >/dev/null || missing="$$missing nodejs"; \
	  command -v java >/dev/null || missing="$$missing default-jdk-headless"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "test-deps: no apt-get: install $(TEST_PACKAGES) yourself"; fi; \
	if ! getent passwd sshd >/dev/null; then \
	  echo "creating the sshd privilege-separation user"; \
	  $$sudo useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd; \
	fi; \
	$$sudo mkdir -p /run/sshd; $$sudo chmod 0755 /run/sshd

test: test-unit ## Run every test: test-unit, then the container suite where a Docker engine answers
	@if $(DOCKER) info >/dev/null 2>&1; then $(MAKE) test-integration; \
	else echo "tests/integration skipped: no Docker engine reachable ($(DOCKER) info failed); make test-integration runs it"; fi

test-unit: lint ## Run every test but the container suite (race detector on), after gofmt, go vet and staticcheck
	$(GO) test -race -count=1 $(PKGS)
	$(MAKE) build build-windows
	./bin/postrotate validate --inventory examples/inventory.yaml

test-short: ## Run the tests without the race detector and the lint
	$(GO) test -count=1 $(PKGS)

lint: ## gofmt, go vet (Linux and Windows), staticcheck, the coordinator's layering (.ci/layers)
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	.ci/layers
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
# too. A new interesting input is not minimized (-fuzzminimizetime 1x): a
# minimization still running when -fuzztime ends fails the run with
# "context deadline exceeded", and the time should go to fuzzing anyway.
#
# With -fuzztime as a duration, Go 1.26 (and no later release we use)
# also fails now and then a run that found nothing, with only "context
# deadline exceeded" at the end (go.dev/issue/75804): internal/fuzz puts
# the duration in a context whose done channel closes before the workers'
# child context is cancelled, and its coordinator, woken in between, sees
# the deadline's error where the child's is still nil and reports it. A
# run that ends that way — that line alone under its "--- FAIL", no other
# failure, and no input written to testdata/fuzz/<name>/ — counts as
# passed, with a note. Any other failure (a failing input is always
# written there) stops the loop.
define fuzz_all
set -euo pipefail; \
pkgs=$$(grep -rl --include='*_test.go' '^func Fuzz' $(MODULES) | xargs -n1 dirname | sort -u | sed 's|^|./|'); \
list=$$($(GO) test -list '^Fuzz' $$pkgs | awk '/^Fuzz/ { names = names " " $$1 } /^ok/ { if (names != "") print $$2 names; names = "" }'); \
n=$$(wc -w <<< "$$list"); n=$$((n - $$(wc -l <<< "$$list"))); \
if [ "$$n" -le 0 ]; then echo "no fuzz tests found"; exit 1; fi; \
fuzztime=$(1); \
log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
while read -r pkg names; do \
  dir=$$($(GO) list -f '{{.Dir}}' "$$pkg"); \
  for name in $$names; do \
    echo "--- $$name ($$pkg, $$fuzztime)"; \
    corpus="$$dir/testdata/fuzz/$$name"; \
    before=$$(ls -A "$$corpus" 2>/dev/null || true); \
    if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$fuzztime -fuzzminimizetime 1x "$$pkg" </dev/null 2>&1 | tee "$$log"; then continue; fi; \
    if [ "$$(ls -A "$$corpus" 2>/dev/null || true)" = "$$before" ] && awk -v name="$$name" ' \
        /^--- FAIL: / { fails++; if (index($$0, "--- FAIL: " name " (") == 1) { getline; deadline = ($$0 == "    context deadline exceeded") } } \
        /Failing input written to/ { written = 1 } \
        END { exit !(fails == 1 && deadline && !written) }' "$$log"; then \
      echo "--- $$name: fuzzed for $$fuzztime, nothing found; the \"context deadline exceeded\" above is Go's (go.dev/issue/75804), not a failure"; \
    else \
      exit 1; \
    fi; \
  done; \
done <<< "$$list"
endef

fuzz: ## Run every fuzz test for FUZZTIME each (default 10s; try FUZZTIME=1m)
	@$(call fuzz_all,$(FUZZTIME))

# CI fuzzes each fuzz test for FUZZ_CI_EXECS inputs — a count, not a
# duration: with -fuzztime as a duration, a run that reaches its deadline
# fails now and then with "context deadline exceeded" (seen twice,
# FuzzVerify and earlier another target; go.dev/issue/75804, see
# fuzz_all), and a count has no deadline. 40000 inputs take 1–12 s per
# test here (3–38k inputs/s), ≈ 1.5 minutes in all with the builds.
FUZZ_CI_EXECS := 40000

fuzz-ci: ## Run every fuzz test briefly (FUZZ_CI_EXECS inputs each), as CI does after make test
	@$(call fuzz_all,$(FUZZ_CI_EXECS)x)

images-context: ## Fill build/docker/ (the images' build context): static binaries and root files
	rm -rf $(IMAGE_CTX)
	mkdir -p $(IMAGE_CTX)/rootfs/etc/ssl/certs $(IMAGE_CTX)/rootfs/tmp $(IMAGE_CTX)/rootfs-nonroot/data $(IMAGE_CTX)/rootfs-nonroot/secrets
	cd coordinator && $(STATIC_GO) -ldflags "-s -w -X github.com/postrotate/postrotate/coordinator/cli.Version=$(VERSION)" -o ../$(IMAGE_CTX)/postrotate ./cmd/postrotate
	cd coordinator && $(STATIC_GO) -ldflags "-s -w" -o ../$(IMAGE_CTX)/nats-server github.com/nats-io/nats-server/v2
	cd worker && $(STATIC_GO) -ldflags "-s -w -X main.Version=$(VERSION)" -o ../$(IMAGE_CTX)/postrotate-worker ./cmd/postrotate-worker
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/data:/sbin/nologin\n' > $(IMAGE_CTX)/rootfs/etc/passwd
	printf 'root:x:0:\nnonroot:x:65532:\n' > $(IMAGE_CTX)/rootfs/etc/group
	cp /etc/ssl/certs/ca-certificates.crt $(IMAGE_CTX)/rootfs/etc/ssl/certs/
	chmod 1777 $(IMAGE_CTX)/rootfs/tmp
	chmod 0700 $(IMAGE_CTX)/rootfs-nonroot/data $(IMAGE_CTX)/rootfs-nonroot/secrets
	cp deploy/docker/machine-entrypoint.sh $(IMAGE_CTX)/

images: images-context ## Build the images postrotate, postrotate-worker, nats-server, postrotate-machine (no registry needed)
ifeq ($(MACHINE_BASE),$(DEBIAN_IMAGE))
	deploy/docker/debian-rootfs.sh $(ROOTFS_TAR) $(DEBIAN_IMAGE)
endif
	$(DOCKER_BUILD) -f deploy/docker/postrotate.Dockerfile -t $(IMAGE_REPO)/postrotate:$(IMAGE_TAG) $(IMAGE_CTX)
	$(DOCKER_BUILD) -f deploy/docker/postrotate-worker.Dockerfile -t $(IMAGE_REPO)/postrotate-worker:$(IMAGE_TAG) $(IMAGE_CTX)
	$(DOCKER_BUILD) -f deploy/docker/nats-server.Dockerfile -t $(IMAGE_REPO)/nats-server:$(IMAGE_TAG) $(IMAGE_CTX)
	$(DOCKER) build --pull=false --build-arg BASE=$(MACHINE_BASE) -f deploy/docker/machine.Dockerfile -t $(IMAGE_REPO)/postrotate-machine:$(IMAGE_TAG) $(IMAGE_CTX)
	@$(DOCKER) images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E '^($(IMAGE_REPO)/|$(DEBIAN_IMAGE))' | sort

COMPOSE_IMAGES = $(foreach i,postrotate postrotate-worker nats-server postrotate-machine,$(IMAGE_REPO)/$(i):$(IMAGE_TAG))

compose-up: ## Start docker-compose.yml (NATS cluster, serve, workers, machines); builds the images when missing
	@$(DOCKER) image inspect $(COMPOSE_IMAGES) >/dev/null 2>&1 || $(MAKE) images
	POSTROTATE_TAG=$(IMAGE_TAG) $(COMPOSE) up -d
	@echo "waiting for serve to be healthy and the workers enrolled..."; \
	for i in $$(seq 1 90); do \
	  health=$$($(DOCKER) inspect -f '{{.State.Health.Status}}' $$($(COMPOSE) ps -q serve) 2>/dev/null); \
	  enrol=$$($(DOCKER) inspect -f '{{.State.Status}} {{.State.ExitCode}}' $$($(COMPOSE) ps -q enrol) 2>/dev/null); \
	  if [ "$$health" = healthy ] && [ "$$enrol" = "exited 0" ]; then echo "serve is healthy, workers enrolled: http://127.0.0.1:7480"; exit 0; fi; \
	  case "$$enrol" in "exited "[1-9]*) echo "the enrolment failed:"; $(COMPOSE) logs enrol; exit 1;; esac; \
	  sleep 2; \
	done; echo "serve is not healthy after 3 minutes:"; $(COMPOSE) ps; $(COMPOSE) logs --tail 30 serve; exit 1

compose-down: ## Stop docker-compose.yml and remove its containers, networks and volumes
	POSTROTATE_TAG=$(IMAGE_TAG) $(COMPOSE) down --volumes --remove-orphans

# tests/integration (its own module, outside go.work, which takes the API
# and wire types from this tree's modules through replace directives): the
# compose deployment in containers, against images built from
# this tree (make images: ≈ 15 s when the Debian root is cached),
# through testcontainers-go, without its reaper (every test removes its
# containers, network and volume itself).
# Afterwards, nothing of the suite may be left: a container or network
# labelled by testcontainers, or a credentials volume, fails the target.
test-integration: images ## Build the images, then run tests/integration against them (needs Docker)
	cd tests/integration && GOWORK=off TESTCONTAINERS_RYUK_DISABLED=true $(GO) test -count=1 -v -timeout 45m ./...
	@left="$$($(DOCKER) ps -aq --filter label=org.testcontainers=true) $$($(DOCKER) network ls -q --filter label=org.testcontainers=true) $$($(DOCKER) volume ls -q --filter name=postrotate-it-)"; \
	if [ -n "$${left// /}" ]; then echo "tests/integration left containers, networks or volumes behind: $$left"; exit 1; fi; \
	echo "tests/integration: no container, network or volume left behind"

clean: ## Remove build outputs (not the cached Debian root build/debian-bookworm.tar: rm -rf build)
	rm -rf bin $(IMAGE_CTX)
