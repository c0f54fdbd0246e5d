# pktfate: `make demo` runs the self-contained demo, `make test` every test.
# Both install their build dependencies first (make deps, idempotent).

GO      ?= go
BIN     := bin/pktfate
KERNEL  ?=
# Files the matrix's guests send out (captures), checked on the host.
ARTIFACTS ?= $(CURDIR)/.matrix-artifacts
# What building and running pktfate needs (the demo), and what the tests add.
RUN_DEPS  := gcc make libpcap-dev iproute2 nftables
TEST_DEPS := $(RUN_DEPS) clang llvm libbpf-dev tcpdump tshark iptables \
             qemu-system-x86 busybox-static cpio xz-utils zstd debootstrap dwarves \
             kmod bpftool debian-archive-keyring gnupg prometheus tmux
GOFILES := $(shell find . -name '*.go' -not -path './.git/*' 2>/dev/null)

.PHONY: kmod kmod-clean all deps deps-run install-pkgs build demo generate check-generate check-deps check-schema test test-unit vmtest matrix-check vmshell bench bench-peers clean

all: build

# Install the Debian packages pktfate builds and tests with (deps) or just
# runs with (deps-run); they do nothing when everything is present.
deps:
	@$(MAKE) --no-print-directory install-pkgs PKGS="$(TEST_DEPS)"

deps-run:
	@$(MAKE) --no-print-directory install-pkgs PKGS="$(RUN_DEPS)"

install-pkgs:
	@missing=$$(for p in $(PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build: $(BIN)

$(BIN): $(GOFILES) go.mod go.sum tracer/skbfate_bpfel.o
	$(GO) build -o $(BIN) ./cmd/pktfate

demo: deps-run build
	./$(BIN) demo

# Regenerates the BPF objects and their Go bindings (needs clang).
generate:
	$(GO) generate ./tracer/... ./internal/cbpf/...

# Fails when the committed generated files differ from a fresh generation.
check-generate: generate
	@git diff --exit-code --stat -- tracer/ internal/cbpf/ || { echo "generated BPF files are stale: run make generate and commit"; exit 1; }

test: deps
	@t0=$$(date +%s); \
	$(MAKE) --no-print-directory check-generate || exit 1; t1=$$(date +%s); \
	echo "== stage generate: $$((t1-t0))s"; \
	$(MAKE) --no-print-directory test-unit || exit 1; t2=$$(date +%s); \
	echo "== stage unit+privileged: $$((t2-t1))s"; \
	$(MAKE) --no-print-directory vmtest || exit 1; \
	$(MAKE) --no-print-directory matrix-check || exit 1; t3=$$(date +%s); \
	echo "== stage vm matrix: $$((t3-t2))s"; \
	echo "== make test: $$((t3-t0))s"

# Unit tests and the privileged host tests (run as root; each privileged
# test makes its own network namespaces).
# Then the same tests again under the race detector: the plain run keeps
# the allocation and timing assertions that the race detector's
# instrumentation would change; the race run finds data races.
test-unit: check-deps check-schema
	$(GO) vet ./...
	@echo "== go test ./..."
	$(GO) test -count=1 ./...
	@echo "== go test -race ./..."
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

# The model (fate/) and the stages that only consume it link no kernel
# code: no BPF, no netlink, no namespaces (see fate/doc.go).
MODEL_PKGS := ./fate ./internal/render ./internal/report ./internal/capture ./internal/metrics ./internal/rotate
KERNEL_DEPS := ^github.com/(cilium/ebpf|mdlayher/(genetlink|netlink)|vishvananda/)|^github.com/pktfate/pktfate/(genl|tracer)
check-deps:
	@bad=$$($(GO) list -deps $(MODEL_PKGS) | grep -E '$(KERNEL_DEPS)' || true); \
	if [ -n "$$bad" ]; then echo "the model or a renderer links kernel code (keep it in tracer/ or genl/):"; echo "$$bad" | sed 's/^/  /'; exit 1; fi

# docs/schema.json is generated from fate/schema.go: fails when stale.
check-schema:
	@$(GO) run ./internal/tools/schemagen -check docs/schema.json

# Runs the tests inside Debian kernels under QEMU: KERNEL=6.1, 6.12 or 7.2
# (default: all).
# The test binaries of these packages are built with the race detector
# (VMRACE=all for every package, VMRACE=none for none): all but
# cmd/pktfate, whose tests only drive the pktfate binary (a plain build),
# so that instrumenting them costs time and finds nothing. Race-enabled
# guests run 2-4 times slower: the VM limit is raised to match. See
# docs/vmtest.md, Race detector.
VMRACE    ?= ./genl/...,./internal/...,./tracer/...
VMTIMEOUT ?= 25m
vmtest:
	$(GO) run ./internal/vm/cmd/vmtest -kernel "$(KERNEL)" -artifacts "$(ARTIFACTS)" -race=$(VMRACE) -timeout $(VMTIMEOUT)

# Checks on the host what the guests sent out (tshark reads their pcapng).
matrix-check:
	PKTFATE_MATRIX_ARTIFACTS="$(ARTIFACTS)" $(GO) test -count=1 -run '^TestMatrix' ./cmd/pktfate

# An interactive shell in one kernel's VM with pktfate and the tests.
vmshell:
	$(if $(KERNEL),,$(error vmshell needs KERNEL=6.1, 6.12 or 7.2))
	$(GO) run ./internal/vm/cmd/vmtest -shell -kernel "$(KERNEL)"

# pktfate beside perf, bpftrace and dropwatch in Debian's 6.12 and 6.1
# under QEMU with instruction counting (bench/peers/README.md); by hand,
# not part of make test. The table goes to bench/peers/results.md.
bench-peers:
	$(GO) run ./bench/peers/cmd/benchpeers -kernel "$(or $(KERNEL),6.12,6.1)" -out bench/peers/results.md

bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./tracer/ ./internal/render/ ./internal/pcapfilter/
	bench/udpflood.sh

# Builds the kernel module kmod/pktfate.ko (pktfate never loads it: insmod
# kmod/pktfate.ko as root). KDIR: the kernel's build tree.
KDIR ?= /lib/modules/$(shell uname -r)/build
kmod:
	$(MAKE) -C kmod KDIR="$(KDIR)"

kmod-clean:
	$(MAKE) -C kmod KDIR="$(KDIR)" clean

clean:
	rm -rf bin
