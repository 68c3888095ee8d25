# crius: set-up in two commands.
#   make run   installs what is needed, builds, and runs the daemon on the embedded defaults
#   make test  installs what is needed, builds, and runs the whole test suite (what CI runs)

DEB_PACKAGES := protobuf-compiler libseccomp-dev pkg-config containernetworking-plugins docker-registry \
                busybox-static iptables iproute2 util-linux jq runc crun openssl
CNI_CONF_DIR := /etc/cni/net.d

.PHONY: deps build release run test test-node install install-cni fmt bench fuzz

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The installable pair, target/<profile>/dist/{crius,crius-shim}: the daemon runs the shim found
# beside it. crius-shim runs once per container, so it is linked statically and position-dependent:
# about 0.17 MB PSS per idle shim instead of 0.26 MB as a dynamic binary (20 idle shims measured;
# static glibc has no NSS, so the shim never looks up user or group names).
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

# The same pair optimised, in target/release/dist/: what `make install` installs.
release: deps
	cargo build --release --workspace --bins
	$(call dist,--release,release)

# Installs a built pair (`make release` first; PROFILE=debug installs `make build`'s), the systemd unit
# and, only when there is none yet, the default configuration. PREFIX and DESTDIR as usual:
#   make release && make install && systemctl daemon-reload && systemctl enable --now crius
PROFILE ?= release
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
DIST := $(TARGET_DIR)/$(PROFILE)/dist
install:
	@test -x $(DIST)/crius -a -x $(DIST)/crius-shim || \
		{ echo "$(DIST)/crius missing: run \`make release\` (or make build and PROFILE=debug) first"; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSTEMD_UNIT_DIR) $(DESTDIR)/etc/crius
	install -m 0755 $(DIST)/crius $(DIST)/crius-shim $(DESTDIR)$(BINDIR)/
	sed 's|^ExecStart=/usr/local/bin/crius|ExecStart=$(BINDIR)/crius|' contrib/systemd/crius.service \
		> $(DESTDIR)$(SYSTEMD_UNIT_DIR)/crius.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/crius.service
	@if [ -e $(DESTDIR)/etc/crius/config.toml ]; then \
		echo "kept $(DESTDIR)/etc/crius/config.toml"; \
	else \
		$(DIST)/crius config default > $(DESTDIR)/etc/crius/config.toml && \
		echo "wrote $(DESTDIR)/etc/crius/config.toml"; \
	fi

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

# The integration tests inside a Debian bookworm guest with systemd and cgroup v2, booted with qemu
# (TCG, no network); the guest image is built once and cached. See tests/node/run.sh.
# The tests that concern cgroups, resources, stats, OOM, namespaces and restart survival, once per
# driver, then crius.service itself (restart/stop with running containers).
NODE_TESTS ?= cgroup_node security_namespaces container_resources restart_survival container_checkpoint \
              security_userns
NODE_DRIVERS ?= cgroupfs systemd
NODE_SERVICE_TESTS ?= node_service
NODE_TIMEOUT ?= 2400
test-node: build
	NODE_TESTS="$(NODE_TESTS)" NODE_DRIVERS="$(NODE_DRIVERS)" NODE_SERVICE_TESTS="$(NODE_SERVICE_TESTS)" \
		NODE_TIMEOUT="$(NODE_TIMEOUT)" CRIUS_DIST=$(TARGET_DIR)/debug/dist tests/node/run.sh

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

# libFuzzer targets (fuzz/, its own workspace): each runs FUZZ_SECONDS from the committed seeds in
# fuzz/corpus/<target>; what it finds goes to fuzz/.corpus/<target> (new inputs) and
# fuzz/artifacts/<target> (crashes, each to become a regression test). cargo-fuzz passes
# nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable toolchain take them,
# so no nightly is needed. libFuzzer itself is C++, hence g++. FUZZ_BUILD=--dev builds unoptimised,
# in about half the time: enough for a smoke run (CI), too slow for a long one.
FUZZ_SECONDS ?= 60
FUZZ_BUILD ?=
FUZZ_TARGETS := layer_unpack tar_header image_reference manifest_decode shim_frame spdy_frame spdy_headers \
                websocket_channel registry_auth_file
fuzz:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) g++"
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build $(FUZZ_BUILD)
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p .corpus/$$t && \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $(FUZZ_BUILD) $$t .corpus/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
