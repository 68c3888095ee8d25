#!/usr/bin/env bash
# Builds the test node's guest: a Debian bookworm root file system (debootstrap minbase with systemd,
# the kernel and what the integration tests need) turned into a raw ext4 disk, plus the guest's own
# kernel and initrd to boot it with.
#
#   tests/node/image.sh OUT_DIR MIRROR
#
# OUT_DIR must not exist; run.sh passes a temporary name and renames it once this script succeeded,
# so a half-built image is never used. The image is keyed (run.sh) by a hash of this file and the
# mirror: any change here builds a new one.
#
# At boot the guest mounts the host's 9p share (tag host0) on /mnt/host and crius-node-test.service
# runs /mnt/host/guest.sh, writes its output to /mnt/host/out/output.log and its exit status to
# /mnt/host/out/exit-code, then powers the guest off.
set -euo pipefail

out=${1:?usage: image.sh OUT_DIR MIRROR}
mirror=${2:?usage: image.sh OUT_DIR MIRROR}

# What a minbase bookworm needs to boot under qemu with systemd as PID 1 (kernel, initramfs, udev,
# kmod, dbus), then what the integration tests expect on their host: the CNI plugins in
# /usr/lib/cni, docker-registry on PATH, /bin/busybox (the test images are built from it),
# iptables, ip, nsenter/mount, jq (the Makefile's DEB_PACKAGES without the build tools), and criu
# (CheckpointContainer; bookworm's 3.17 works on the guest's 6.1 kernel).
packages=(
    systemd systemd-sysv linux-image-amd64 udev iproute2 kmod dbus procps initramfs-tools ca-certificates
    containernetworking-plugins docker-registry busybox-static iptables util-linux jq criu
)
disk_size=8G

rootfs=$(mktemp -d /var/tmp/crius-node-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

mkdir "$out"
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" bookworm "$rootfs" "$mirror"

echo crius-node >"$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tcrius-node\n' \
    >"$rootfs/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\nhost0 /mnt/host 9p trans=virtio,version=9p2000.L,msize=1048576,nofail 0 0\n' \
    >"$rootfs/etc/fstab"
mkdir -p "$rootfs/mnt/host"
printf '9p\n9pnet_virtio\n' >"$rootfs/etc/modules-load.d/9p.conf"

# Nothing in the guest may compete with the tests: the packaged registry (the test harness starts
# its own on a free port) and apt's timers stay off.
chroot "$rootfs" systemctl mask docker-registry.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer fstrim.timer >/dev/null

cat >"$rootfs/usr/local/sbin/crius-node-test" <<'EOF'
#!/bin/bash
# Runs the host's /mnt/host/guest.sh once, output to the share and the serial console, the exit
# status last (written to a temporary name first: the host reads a complete file or none).
set -uo pipefail
out=/mnt/host/out
mkdir -p "$out"
if [ -r /mnt/host/guest.sh ]; then
    bash /mnt/host/guest.sh 2>&1 | tee "$out/output.log" >/dev/console
    rc=${PIPESTATUS[0]}
else
    echo "crius-node-test: /mnt/host/guest.sh missing (9p share not mounted?)" | tee /dev/console
    rc=2
fi
echo "$rc" >"$out/exit-code.tmp" && mv "$out/exit-code.tmp" "$out/exit-code"
sync
systemctl --no-block poweroff
EOF
chmod 0755 "$rootfs/usr/local/sbin/crius-node-test"

cat >"$rootfs/etc/systemd/system/crius-node-test.service" <<'EOF'
[Unit]
Description=crius test node: run the host's guest.sh, report, power off
After=multi-user.target
RequiresMountsFor=/mnt/host

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/crius-node-test
TimeoutStartSec=infinity
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
EOF
chroot "$rootfs" systemctl enable crius-node-test.service >/dev/null 2>&1

kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$(find "$rootfs/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
    echo "image.sh: no kernel or initrd in $rootfs/boot" >&2
    exit 1
fi
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"

# Drop the package cache, then make the disk (sparse: 8G of room, ~1 GB written).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
truncate -s "$disk_size" "$out/disk.img"
mkfs.ext4 -q -L crius-node -d "$rootfs" "$out/disk.img"
printf '%s\n' "${packages[@]}" >"$out/packages"
echo "image.sh: built $out ($(du -sh --apparent-size "$rootfs" | cut -f1) root file system)"
