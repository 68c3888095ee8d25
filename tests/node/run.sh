#!/usr/bin/env bash
# `make test-node`: runs crius's integration tests inside a Debian bookworm guest with systemd as
# PID 1 and the unified cgroup v2 hierarchy (what most Kubernetes nodes run), booted with qemu (TCG),
# and exits with the guest's result. TCG, not KVM: on this kind of machine /dev/kvm is nested
# "PVM" virtualisation, under which an unmodified Debian kernel stops with a KVM emulation failure;
# with TCG the guest boots in ~20-25 s.
#
#   tests/node/run.sh          host packages, guest image (cached), test binaries, boot, result
#   tests/node/run.sh image    host packages and the guest image only
#
# Settings (environment; the Makefile passes its variables of the same names):
#   NODE_TESTS          integration test targets (tests/tests/NAME.rs) to run in the guest
#   NODE_DRIVERS        cgroup drivers; each test runs once per driver with
#                       CRIUS_TEST_CGROUP_MANAGER=<driver> (`default`: the variable unset)
#   NODE_SERVICE_TESTS  tests run against crius installed and started as crius.service (guest.sh)
#   NODE_TIMEOUT        seconds the guest may run before qemu is killed (default 2400)
#   NODE_CACHE          where guest images are kept (default /var/cache/crius-test-node)
#   CRIUS_DIST          the built crius and crius-shim (default target/debug/dist, from `make build`)
#
# The guest has no network device: the tests run on its loopback (the harness starts its own
# docker-registry on 127.0.0.1 and builds its images from the guest's /bin/busybox).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# Set but empty means none (NODE_TESTS= boots the guest, prints its facts and runs nothing).
NODE_TESTS=${NODE_TESTS-cgroup_node security_namespaces container_resources restart_survival container_checkpoint security_userns}
NODE_DRIVERS=${NODE_DRIVERS-cgroupfs systemd}
NODE_SERVICE_TESTS=${NODE_SERVICE_TESTS-node_service}
NODE_TIMEOUT=${NODE_TIMEOUT:-2400}
NODE_CACHE=${NODE_CACHE:-/var/cache/crius-test-node}
CRIUS_DIST=${CRIUS_DIST:-$repo/target/debug/dist}

log() { printf 'test-node: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# The Debian mirror the host's apt uses (the deb822 file of Debian's images, else sources.list).
debian_mirror() {
    local uri=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    elif [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ { print $2; exit }' /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# qemu comes from bookworm-backports by name and without recommends: Debian's cloud images ship
# qemu-utils from backports, which conflicts with bookworm's qemu 7.2, and `-t bookworm-backports`
# would pull in ~180 packages.
install_host_packages() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86/bookworm-backports
        qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports
        seabios/bookworm-backports)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
    [ ${#missing[@]} -gt 0 ] || return 0
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding the bookworm-backports suite to apt's sources"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
            "$(debian_mirror)" /usr/share/keyrings/debian-archive-keyring.gpg \
            >/etc/apt/sources.list.d/crius-test-node-backports.sources
    fi
    log "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Prints the directory of the guest image, building it first when the cache has none for this
# image.sh and mirror. Built under a temporary name and renamed when complete; older images are
# removed. A lock keeps two runs from building at once.
guest_image() {
    local mirror key dir tmp start
    mirror=$(debian_mirror)
    key=$( { cat "$here/image.sh"; echo "$mirror"; } | sha256sum | cut -c1-16)
    dir="$NODE_CACHE/bookworm-$key"
    mkdir -p "$NODE_CACHE"
    exec 8>"$NODE_CACHE/.lock"
    flock 8
    if [ ! -f "$dir/disk.img" ]; then
        log "building the guest image $dir (debootstrap from $mirror; a few minutes)"
        start=$SECONDS
        tmp="$NODE_CACHE/.building-$key.$$"
        rm -rf "$tmp"
        if ! "$here/image.sh" "$tmp" "$mirror" >"$NODE_CACHE/build-$key.log" 2>&1; then
            rm -rf "$tmp"
            tail -n 30 "$NODE_CACHE/build-$key.log" >&2
            die "building the guest image failed; full log: $NODE_CACHE/build-$key.log"
        fi
        find "$NODE_CACHE" -mindepth 1 -maxdepth 1 \( -name 'bookworm-*' -o -name 'build-*.log' \) \
            ! -name "build-$key.log" -exec rm -rf {} +
        mv "$tmp" "$dir"
        log "guest image built in $((SECONDS - start))s"
    fi
    exec 8>&-
    echo "$dir"
}

# Prints "NAME PATH" for each test target in NODE_TESTS and NODE_SERVICE_TESTS (built if needed).
test_executables() {
    local names json
    names="$NODE_TESTS $NODE_SERVICE_TESTS"
    [ -n "${names// /}" ] || return 0
    json=$(cd "$repo" && cargo test -p crius-tests --no-run --message-format=json)
    jq -r --arg names "$names" '
        select(.reason == "compiler-artifact" and .target.kind == ["test"] and .executable != null)
        | select(.target.name as $n | $names | split(" ") | index($n))
        | "\(.target.name) \(.executable)"' <<<"$json"
}

# Everything the guest reads from the share (layout: guest.sh's header).
prepare_share() {
    local share=$1 name path executables
    mkdir -p "$share/dist" "$share/tests" "$share/out" "$share/contrib/systemd" "$share/contrib/cni"
    if [ ! -x "$CRIUS_DIST/crius" ] || [ ! -x "$CRIUS_DIST/crius-shim" ]; then
        die "$CRIUS_DIST/crius and crius-shim missing: run \`make build\` first"
    fi
    cp "$CRIUS_DIST/crius" "$CRIUS_DIST/crius-shim" "$share/dist/"
    executables=$(test_executables)
    while read -r name path; do
        [ -z "$name" ] || cp "$path" "$share/tests/$name"
    done <<<"$executables"
    for name in $NODE_TESTS $NODE_SERVICE_TESTS; do
        [ -x "$share/tests/$name" ] || die "no integration test target named '$name' (tests/tests/$name.rs)"
    done
    cp "$here/guest.sh" "$share/"
    cp "$repo/contrib/systemd/crius.service" "$share/contrib/systemd/"
    cp "$repo/contrib/cni/"*.conflist "$share/contrib/cni/"
    {
        printf 'NODE_TESTS=%q\n' "$NODE_TESTS"
        printf 'NODE_DRIVERS=%q\n' "$NODE_DRIVERS"
        printf 'NODE_SERVICE_TESTS=%q\n' "$NODE_SERVICE_TESTS"
    } >"$share/node.env"
}

tmp=""
qemu_pid=""
tail_pid=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    [ -z "$tail_pid" ] || kill "$tail_pid" 2>/dev/null || true
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    [ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, debootstrap, the 9p share with security_model=passthrough)"
install_host_packages
image=$(guest_image)
[ "${1:-}" != image ] || { log "guest image: $image"; exit 0; }

tmp=$(mktemp -d /var/tmp/crius-test-node.XXXXXX)
share="$tmp/share"
serial="$tmp/serial.log"
prepare_share "$share"

log "booting the guest (TCG; timeout ${NODE_TIMEOUT}s); tests: $NODE_TESTS; drivers: $NODE_DRIVERS${NODE_SERVICE_TESTS:+; service tests: $NODE_SERVICE_TESTS}"
start=$SECONDS
# snapshot=on: the guest's writes go to a temporary overlay (in TMPDIR), the cached image stays pristine.
TMPDIR=$tmp timeout --kill-after=15 "$NODE_TIMEOUT" qemu-system-x86_64 \
    -name crius-test-node -accel tcg,thread=multi -cpu max -smp 2 -m 4G \
    -nic none -display none -monitor none -serial "file:$serial" -no-reboot \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append 'root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=1' \
    -drive "file=$image/disk.img,format=raw,if=virtio,snapshot=on" \
    -virtfs "local,path=$share,mount_tag=host0,security_model=passthrough,id=host0" &
qemu_pid=$!
# The guest's test output, live, as it writes it to the share. Both run in the background: the
# `wait` builtin, unlike a foreground command, lets the INT/TERM traps end the run at once.
tail -F -n +1 --pid="$qemu_pid" "$share/out/output.log" 2>/dev/null &
tail_pid=$!
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=""
wait "$tail_pid" || true
tail_pid=""
log "guest ran for $((SECONDS - start))s (qemu exit status $qemu_rc)"

if [ ! -s "$share/out/exit-code" ]; then
    if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
        log "the guest did not finish within NODE_TIMEOUT=${NODE_TIMEOUT}s; qemu was killed"
    fi
    log "no result from the guest; last lines of its serial console:"
    tail -n 60 "$serial" >&2 || true
    exit 1
fi
rc=$(cat "$share/out/exit-code")
if [ "$rc" -ne 0 ]; then
    log "FAILED in the guest (exit status $rc): see the summary above"
else
    log "passed in the guest"
fi
exit "$rc"
