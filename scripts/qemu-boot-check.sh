#!/usr/bin/env bash
# Independent cross-check of the default guest image (not run in CI): boot public/images/ under QEMU's
# qemu-system-riscv32 'virt' machine and report the seconds from starting QEMU to the shell prompt.
#
# Debian's QEMU ships no rv32 firmware, so this builds OpenSBI (generic platform, XLEN 32) from the
# upstream tarball in Debian's opensbi source package, fetched with a private sources list.
#
# Usage: scripts/qemu-boot-check.sh [--disk] [--memory MIB] [--smp N] [--keep-going]
#   --disk        boot from rootfs.ext2 on virtio-blk (root=/dev/vda rw) instead of the initramfs
#   --memory MIB  guest RAM (default 128); OpenSBI takes the first 4 MiB of it under QEMU
#   --smp N       harts (default 2)
# Needs root (apt-get install) on Debian 12; work files go to build/qemu-check/.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGES=${GUEST_OUT:-$REPO/public/images}
WORK=$REPO/build/qemu-check
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
OPENSBI_SUITE=trixie
OPENSBI_VERSION=1.6
OPENSBI_ORIG=opensbi_${OPENSBI_VERSION}.orig.tar.gz
OPENSBI_SHA256=d11702103f177a2914e94eec57ce5ed820296d874f6b6525c4482e55d71a3667
PACKAGES=(qemu-system-misc expect gcc-riscv64-linux-gnu make device-tree-compiler python3 gzip
          dpkg-dev debian-archive-keyring)
export LC_ALL=C

DISK=0 MEMORY=128 SMP=2
while (($#)); do
  case $1 in
    --disk) DISK=1 ;;
    --memory) MEMORY=$2; shift ;;
    --smp) SMP=$2; shift ;;
    *) echo "usage: $0 [--disk] [--memory MIB] [--smp N]" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "qemu-boot-check: ERROR: $*" >&2; exit 1; }
trap 'echo "qemu-boot-check: FAILED at line $LINENO" >&2' ERR
mkdir -p "$WORK/logs"

[[ $(id -u) -eq 0 ]] || die "run as root (it installs Debian packages)"
for f in Image.gz initramfs.cpio.gz rootfs.ext2.chunked manifest.json; do
  [[ -f $IMAGES/$f ]] || die "$IMAGES/$f missing: run scripts/build-guest-image.sh first"
done

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "qemu-boot-check: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >"$WORK/logs/apt-update.log" 2>&1 || die "apt-get update failed (see $WORK/logs)"
  apt-get install -y --no-install-recommends "${missing[@]}" >"$WORK/logs/apt-install.log" 2>&1 ||
    die "apt-get install failed (see $WORK/logs/apt-install.log)"
fi

# ---- OpenSBI firmware for rv32 (fw_dynamic: QEMU tells it where the kernel and the device tree are)
FW=$WORK/opensbi-build/platform/generic/firmware/fw_dynamic.bin
if [[ ! -f $FW ]]; then
  APTDIR=$WORK/apt
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$WORK/downloads"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $OPENSBI_SUITE main" \
    >"$APTDIR/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache" -o APT::Sandbox::User=root)
  if [[ ! -f $WORK/downloads/$OPENSBI_ORIG ]] || [[ $(sha256sum <"$WORK/downloads/$OPENSBI_ORIG" | cut -d' ' -f1) != "$OPENSBI_SHA256" ]]; then
    apt-get "${APT_OPTS[@]}" update >"$WORK/logs/apt-src-update.log" 2>&1 || die "apt-get update (deb-src) failed"
    # Only the upstream tarball is needed; the mirror may lack the Debian revision's other files, so a
    # partial failure is fine as long as the tarball arrives with the pinned checksum.
    (cd "$WORK/downloads" && apt-get "${APT_OPTS[@]}" source --download-only "opensbi/$OPENSBI_SUITE") \
      >"$WORK/logs/apt-source.log" 2>&1 || true
    [[ -f $WORK/downloads/$OPENSBI_ORIG ]] || die "could not download $OPENSBI_ORIG (see $WORK/logs/apt-source.log)"
    [[ $(sha256sum <"$WORK/downloads/$OPENSBI_ORIG" | cut -d' ' -f1) == "$OPENSBI_SHA256" ]] ||
      die "$OPENSBI_ORIG checksum mismatch"
  fi
  rm -rf "$WORK/opensbi" "$WORK/opensbi-build"
  mkdir -p "$WORK/opensbi"
  tar -xzf "$WORK/downloads/$OPENSBI_ORIG" -C "$WORK/opensbi" --strip-components=1
  echo "qemu-boot-check: building OpenSBI $OPENSBI_VERSION for rv32"
  make -C "$WORK/opensbi" O="$WORK/opensbi-build" PLATFORM=generic PLATFORM_RISCV_XLEN=32 \
    CROSS_COMPILE=riscv64-linux-gnu- -j2 >"$WORK/logs/opensbi.log" 2>&1 ||
    { tail -n 30 "$WORK/logs/opensbi.log" >&2; die "OpenSBI build failed"; }
  [[ -f $FW ]] || die "OpenSBI build produced no fw_dynamic.bin"
fi

# ---- images: QEMU wants the raw kernel Image; the gzip initramfs is handed over as is (the kernel inflates it)
gzip -dc "$IMAGES/Image.gz" >"$WORK/Image"
cp "$IMAGES/initramfs.cpio.gz" "$WORK/initramfs.cpio.gz"
BOOTARGS=$(sed -n 's/.*"bootargs": "\([^"]*\)".*/\1/p' "$IMAGES/manifest.json")
HOST=qemu-check
QEMU=(qemu-system-riscv32 -machine virt -cpu rv32 -smp "$SMP" -m "$MEMORY" -nographic -no-reboot
      -bios "$FW" -kernel "$WORK/Image"
      -netdev user,id=net0 -device virtio-net-device,netdev=net0)
if ((DISK)); then
  gzip -dc "$IMAGES/rootfs.ext2.chunked" >"$WORK/rootfs.ext2" # gzip members, one per chunk
  QEMU+=(-drive "file=$WORK/rootfs.ext2,format=raw,if=none,id=disk0" -device virtio-blk-device,drive=disk0
         -append "$BOOTARGS root=/dev/vda rw hostname=$HOST")
  MODE="root disk (virtio-blk, ext2)"
else
  QEMU+=(-initrd "$WORK/initramfs.cpio.gz" -append "$BOOTARGS hostname=$HOST")
  MODE="initramfs"
fi

echo "qemu-boot-check: $(qemu-system-riscv32 --version | head -n 1); $MODE, $SMP harts, $MEMORY MiB"
LOG=$WORK/logs/console.log
# expect: time the prompt, then check a few things and power off through SBI SRST (QEMU exits).
cat >"$WORK/boot.exp" <<'EOF'
set log [lindex $argv 0]
set host [lindex $argv 1]
set cmd [lrange $argv 2 end]
log_file -a -noappend $log
log_user 0
set timeout 120
set t0 [clock milliseconds]
spawn {*}$cmd
expect {
  -re "\n$host:\[^\r\n]*# $" {}
  "job control turned off" { puts "FAIL: the shell has no controlling tty"; exit 1 }
  "Kernel panic" { puts "FAIL: kernel panic"; exit 1 }
  timeout { puts "FAIL: no shell prompt within $timeout s"; exit 1 }
  eof { puts "FAIL: QEMU exited before the prompt"; exit 1 }
}
set t [expr {([clock milliseconds] - $t0) / 1000.0}]
puts [format "BOOT %.2f" $t]
set timeout 30
proc run {c re what} {
  global host
  send "$c\r"
  expect {
    -re $re { puts "ok   $what" }
    timeout { puts "FAIL $what"; exit 1 }
  }
  expect -re "\n$host:\[^\r\n]*# $"
}
run "sleep 30 & jobs" {\[1\]\+ +Running} "job control (background job listed)"
run "kill %1; wait; uname -m; grep -c ^processor /proc/cpuinfo" "riscv32\\s+\\d+\\s" "uname -m = riscv32"
run "mount | grep -c -E '^(proc|sysfs|devtmpfs|devpts|tmpfs) '" "\\s\[5-9\]\\s" "proc, sys, dev, devpts and tmpfs mounted"
run "sleep 5; ip -4 addr show dev eth0 | grep -o 'inet \[0-9./\]*'; cat /etc/resolv.conf" "inet 10\\.0\\.2\\.15/24" "eth0 configured by udhcpc"
run "ip route | grep default" "default via 10\\.0\\.2\\.2" "default route"
run "cat /proc/meminfo | head -n 1" "MemTotal: +\[0-9\]+ kB" "/proc/meminfo"
send "poweroff\r"
set timeout 30
expect {
  eof { puts "ok   poweroff reached the firmware (QEMU exited)" }
  timeout { puts "FAIL poweroff did not stop QEMU"; exit 1 }
}
EOF
set +e
expect -f "$WORK/boot.exp" "$LOG" "$HOST" "${QEMU[@]}" | tee "$WORK/logs/checks.log"
rc=${PIPESTATUS[0]}
set -e
secs=$(sed -n 's/^BOOT //p' "$WORK/logs/checks.log")
echo "qemu-boot-check: console log in $LOG"
((rc == 0)) || die "boot check failed"
echo "qemu-boot-check: shell prompt after $secs s ($MODE, $SMP harts, $MEMORY MiB)"
