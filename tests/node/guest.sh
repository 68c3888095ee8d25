#!/usr/bin/env bash
# Runs INSIDE the test node guest (systemd + cgroup v2), started by crius-node-test.service from the
# host's 9p share mounted on /mnt/host. run.sh lays the share out as:
#
#   /mnt/host/node.env        NODE_TESTS, NODE_DRIVERS, NODE_SERVICE_TESTS (shell assignments)
#   /mnt/host/dist/           crius and crius-shim (`make build`)
#   /mnt/host/tests/NAME      the integration test executables, by test target name
#   /mnt/host/contrib/        contrib/systemd/crius.service and contrib/cni/ from the checkout
#   /mnt/host/out/            written here: output.log and exit-code (by the unit's wrapper)
#
# Two scenarios:
# 1. For each driver in NODE_DRIVERS and each test in NODE_TESTS, the test binary runs with
#    CRIUS_BIN_DIR set and --test-threads=1; the harness starts its own daemons. The driver reaches
#    the harness as CRIUS_TEST_CGROUP_MANAGER=<driver>; the driver name `default` leaves it unset.
# 2. When NODE_SERVICE_TESTS is not empty: crius is installed as the systemd service
#    (binaries in /usr/local/bin, contrib/systemd/crius.service, the default config and CNI config),
#    started with `systemctl start crius`, and each test in NODE_SERVICE_TESTS runs against it
#    (socket /run/crius/crius.sock, CRIUS_NODE_SERVICE=crius.service in its environment); such a
#    test may restart/stop/start the unit itself. The unit is stopped afterwards.
#
# Exit status: 0 when every run passed, else 1; every run is listed in a summary at the end.
set -euo pipefail

share=/mnt/host
# shellcheck source=/dev/null
. "$share/node.env"
: "${NODE_TESTS=}" "${NODE_DRIVERS=cgroupfs systemd}" "${NODE_SERVICE_TESTS=}"

# Binaries are copied off the 9p share to the guest's own disk: the daemon, its shims and the tests
# then run from an ordinary local file system, as on a real node.
work=/var/lib/crius-node
rm -rf "$work"
mkdir -p "$work/dist" "$work/tests"
cp "$share"/dist/crius "$share"/dist/crius-shim "$work/dist/"
for t in $NODE_TESTS $NODE_SERVICE_TESTS; do
    cp "$share/tests/$t" "$work/tests/$t"
done

section() { printf '\n===== %s =====\n' "$*"; }

section "guest"
uname -r
systemctl --version | head -n 1
echo "cgroup fs: $(stat -fc %T /sys/fs/cgroup)"
echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "root cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
echo "system state: $(systemctl is-system-running || true) (this test unit is a boot job: \"starting\" until it ends)"
systemctl --no-legend --failed || true
echo "cpus: $(nproc); memory: $(free -m | awk '/^Mem:/ { print $2 " MiB" }')"

declare -a summary=()
failed=0

# run_one LABEL CMD...: runs one test binary, records pass/fail and its wall time in the summary.
# No test returns early to pass: one that cannot run here fails with the reason or is #[ignore]d.
run_one() {
    local label=$1
    shift
    section "$label"
    local start=$SECONDS rc=0
    "$@" 2>&1 || rc=$?
    local took=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        summary+=("PASS  ${took}s  $label")
    else
        summary+=("FAIL  ${took}s  $label (exit $rc)")
        failed=1
    fi
}

for driver in $NODE_DRIVERS; do
    for t in $NODE_TESTS; do
        env_args=(CRIUS_BIN_DIR="$work/dist" RUST_BACKTRACE=1)
        [ "$driver" = default ] || env_args+=(CRIUS_TEST_CGROUP_MANAGER="$driver")
        run_one "$t [$driver]" env "${env_args[@]}" "$work/tests/$t" --test-threads=1 --show-output
    done
done

if [ -n "$NODE_SERVICE_TESTS" ]; then
    section "crius.service: install and start"
    install -m 0755 "$work/dist/crius" "$work/dist/crius-shim" /usr/local/bin/
    install -m 0644 "$share/contrib/systemd/crius.service" /etc/systemd/system/crius.service
    mkdir -p /etc/crius /etc/cni/net.d
    [ -e /etc/crius/config.toml ] || /usr/local/bin/crius config default >/etc/crius/config.toml
    [ -n "$(ls -A /etc/cni/net.d)" ] || cp "$share/contrib/cni/10-crius-bridge.conflist" /etc/cni/net.d/
    systemctl daemon-reload
    service_up=0
    if systemctl start crius.service; then
        service_up=1
        summary+=("PASS  systemctl start crius")
    else
        summary+=("FAIL  systemctl start crius")
        failed=1
    fi
    systemctl --no-pager status crius.service || true
    if [ "$service_up" -eq 1 ]; then
        for t in $NODE_SERVICE_TESTS; do
            run_one "$t [service]" env CRIUS_BIN_DIR=/usr/local/bin CRIUS_NODE_SERVICE=crius.service \
                RUST_BACKTRACE=1 "$work/tests/$t" --test-threads=1 --show-output --include-ignored
        done
    fi
    section "crius.service: stop"
    systemctl stop crius.service || true
    journalctl --no-pager -u crius.service | tail -n 50
fi

section "summary"
[ ${#summary[@]} -gt 0 ] || summary=("(nothing to run: NODE_TESTS and NODE_SERVICE_TESTS are empty)")
printf '%s\n' "${summary[@]}"
exit "$failed"
