# crius: set-up in two commands.
#   make run   installs what is needed, builds, and runs the daemon on the embedded defaults
#   make test  installs what is needed, builds, and runs the whole test suite (what CI runs)

DEB_PACKAGES := protobuf-compiler libseccomp-dev pkg-config containernetworking-plugins docker-registry \
                busybox-static iptables iproute2 util-linux jq
CNI_CONF_DIR := /etc/cni/net.d

.PHONY: deps build run test install-cni fmt bench fuzz

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The installable pair, target/<profile>/dist/{crius,crius-shim}: the daemon runs the shim found
# beside it. crius-shim runs once per container, so it is linked statically and position-dependent:
# about 0.17 MB PSS per idle shim instead of 0.26 MB as a dynamic binary (REFERENCE.md section 9).
# The flags reach only the shim's own final link (`cargo rustc` for an explicit --target keeps
# them off build scripts and proc-macros). A separate dir, because cargo re-links its own outputs.
HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
define dist
	cargo rustc $(1) -p crius-shim --bin crius-shim --target $(HOST_TARGET) -- \
		-C target-feature=+crt-static -C relocation-model=static
	mkdir -p $(TARGET_DIR)/$(2)/dist
	install -m 0755 $(TARGET_DIR)/$(2)/crius $(TARGET_DIR)/$(HOST_TARGET)/$(2)/crius-shim $(TARGET_DIR)/$(2)/dist/
endef

build: deps
	cargo build --workspace --bins
	$(call dist,,debug)

# Installs the shipped bridge network only when the host has no CNI config of its own.
install-cni:
	@mkdir -p $(CNI_CONF_DIR)
	@if [ -z "$$(ls -A $(CNI_CONF_DIR) 2>/dev/null)" ]; then \
		cp contrib/cni/10-crius-bridge.conflist $(CNI_CONF_DIR)/ && echo "installed $(CNI_CONF_DIR)/10-crius-bridge.conflist"; \
	fi

run: build install-cni
	$(TARGET_DIR)/debug/dist/crius

# The whole suite: unit tests of every crate and the integration tests in tests/ (root needed).
test: deps
	cargo build --workspace --bins
	$(call dist,,debug)
	CRIUS_BIN_DIR=$(TARGET_DIR)/debug/dist cargo test --workspace --no-fail-fast

fmt:
	cargo fmt --all

# crius beside containerd 1.6 (Debian) through one CRI client; writes docs/PERFORMANCE.md.
BENCH_ARGS ?=
bench: deps
	@command -v containerd >/dev/null && command -v runc >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc)
	cargo build --release --workspace --bins
	$(call dist,--release,release)
	CRIUS_BIN_DIR=$(TARGET_DIR)/release/dist $(TARGET_DIR)/release/crius-bench --markdown docs/PERFORMANCE.md $(BENCH_ARGS)

# libFuzzer targets (fuzz/, nightly): each runs FUZZ_SECONDS from the committed seeds in
# fuzz/corpus/<target>; what it finds goes to fuzz/.corpus/<target> (new inputs) and
# fuzz/artifacts/<target> (crashes, each to become a regression test).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := layer_unpack image_reference manifest_decode
fuzz: deps
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p .corpus/$$t && \
		cargo +nightly fuzz run $$t .corpus/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
