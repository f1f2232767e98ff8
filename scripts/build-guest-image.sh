#!/usr/bin/env bash
# Build tabvisor's default RV32IMA guest from Debian packages alone:
#   Linux 6.1 (linux-source-6.1) + musl 1.2.5 (trixie source) + static busybox 1.35 (bookworm source)
#   -> public/images/{Image.gz, initramfs.cpio.gz, rootfs.ext2.chunked + rootfs.ext2.chunks.json, kernel.config,
#      busybox.config, manifest.json}
#
# Needs: Debian 12, root (apt-get install, device nodes), network access to Debian's mirror.
# Work files go to build/guest/ (ignored by git). Downloaded sources and the unpacked kernel tree are reused;
# everything that goes into the outputs is rebuilt from scratch on every run, so re-running gives the same bytes.
#
# Environment overrides:
#   SOURCE_DATE_EPOCH   timestamp baked into every output (default below)
#   JOBS                parallel make jobs (default 2: the machine is shared)
#   GUEST_WORK          scratch folder (default build/guest)
#   GUEST_OUT           output folder (default public/images)
#   DEBIAN_MIRROR       mirror for the source packages (default http://deb.debian.org/debian)
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST_DIR=$REPO/scripts/guest
WORK=${GUEST_WORK:-$REPO/build/guest}
OUT=${GUEST_OUT:-$REPO/public/images}
JOBS=${JOBS:-2}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# 2025-01-01T00:00:00Z: every timestamp inside the outputs.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}
export KBUILD_BUILD_TIMESTAMP
KBUILD_BUILD_TIMESTAMP=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %e %H:%M:%S UTC %Y')
export KBUILD_BUILD_USER=tabvisor
export KBUILD_BUILD_HOST=tabvisor
export KBUILD_BUILD_VERSION=1
export LC_ALL=C
export TZ=UTC
umask 022

# Upstream tarballs, as shipped in Debian's source packages (.orig.tar.*). Pinned so that a new Debian
# revision can never change what we build without someone noticing.
MUSL_VERSION=1.2.5
MUSL_SUITE=trixie
MUSL_ORIG=musl_${MUSL_VERSION}.orig.tar.gz
MUSL_SHA256=a9a118bbe84d8764da0ea0d28b3ab3fae8477fc7e4085d90102b8596fc7c75e4
BUSYBOX_VERSION=1.35.0
BUSYBOX_SUITE=bookworm
BUSYBOX_ORIG=busybox_${BUSYBOX_VERSION}.orig.tar.bz2
BUSYBOX_SHA256=faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694
KERNEL_TARBALL=/usr/src/linux-source-6.1.tar.xz

# RV32IMA, soft float; Zicsr/Zifencei are spelled out because GCC 12 separates them from I.
ARCH_FLAGS="-march=rv32ima_zicsr_zifencei -mabi=ilp32"
KMAKE=(make -C "$WORK/linux-src" O="$WORK/linux-obj" ARCH=riscv CROSS_COMPILE=riscv64-linux-gnu- -j"$JOBS")

PACKAGES=(
  gcc-riscv64-linux-gnu binutils-riscv64-linux-gnu gcc-riscv64-unknown-elf
  linux-source-6.1 gcc libc6-dev make perl bc flex bison libssl-dev libelf-dev xz-utils bzip2 gzip cpio genext2fs e2fsprogs
  dpkg-dev debian-archive-keyring ca-certificates coreutils findutils sed mawk file
)

# ---------------------------------------------------------------------------------------------------------
START=$(date +%s.%N)
STEP_NAME=""
STEP_START=$START

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
finish_step() {
  if [[ -n $STEP_NAME ]]; then
    printf '==> done  %-34s %7ss  (total %ss)\n' "$STEP_NAME" "$(elapsed "$STEP_START")" "$(elapsed "$START")"
  fi
}
step() {
  finish_step
  STEP_NAME=$1
  STEP_START=$(date +%s.%N)
  printf '==> step  %-34s          (total %ss)\n' "$STEP_NAME" "$(elapsed "$START")"
}
die() { echo "build-guest-image: ERROR: $*" >&2; exit 1; }
on_error() {
  local rc=$? line=$1
  echo "build-guest-image: FAILED (exit $rc) at line $line during step '${STEP_NAME:-start-up}'" >&2
  echo "build-guest-image: logs of the failing step are in $WORK/logs/" >&2
  exit "$rc"
}
trap 'on_error $LINENO' ERR

# run_logged NAME CMD...: run a noisy command with its output in $WORK/logs/NAME.log; show the tail on failure.
run_logged() {
  local name=$1; shift
  local log=$WORK/logs/$name.log
  if ! "$@" >"$log" 2>&1; then
    echo "---- last 40 lines of $log ----" >&2
    tail -n 40 "$log" >&2
    die "'$*' failed (see $log)"
  fi
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------------------------------------------------
step "check host"
[[ $(id -u) -eq 0 ]] || die "run as root (it installs Debian packages and creates device nodes)"
[[ -r /etc/debian_version ]] || die "this script expects Debian 12 (bookworm)"
case $(cat /etc/debian_version) in
  12*) ;;
  *) echo "build-guest-image: warning: tested on Debian 12, this is $(cat /etc/debian_version)" >&2 ;;
esac
mkdir -p "$WORK/logs" "$WORK/downloads" "$OUT"

step "install Debian packages"
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "    installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run_logged apt-update apt-get update
  run_logged apt-install apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "    all ${#PACKAGES[@]} packages already installed"
fi
[[ -r $KERNEL_TARBALL ]] || die "$KERNEL_TARBALL missing (package linux-source-6.1)"

step "fetch musl and busybox sources"
# A private apt configuration that only knows deb-src lines, so the host's sources.list stays untouched.
APTDIR=$WORK/apt
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
cat >"$APTDIR/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $MUSL_SUITE main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $BUSYBOX_SUITE main
EOF
APT_OPTS=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache"
          -o APT::Sandbox::User=root)
fetch_orig() { # fetch_orig PACKAGE SUITE ORIGFILE SHA256
  local pkg=$1 suite=$2 orig=$3 want=$4
  if [[ -f $WORK/downloads/$orig ]] && [[ $(sha256 "$WORK/downloads/$orig") == "$want" ]]; then
    echo "    $orig: cached"
    return
  fi
  if [[ ! -f $APTDIR/lists/.updated ]]; then
    run_logged apt-src-update apt-get "${APT_OPTS[@]}" update
    touch "$APTDIR/lists/.updated"
  fi
  (cd "$WORK/downloads" && run_logged "apt-source-$pkg" apt-get "${APT_OPTS[@]}" source --download-only "$pkg/$suite")
  [[ -f $WORK/downloads/$orig ]] || die "apt-get source $pkg/$suite did not provide $orig"
  local got; got=$(sha256 "$WORK/downloads/$orig")
  [[ $got == "$want" ]] || die "$orig has sha256 $got, expected $want"
  echo "    $orig: downloaded and verified"
}
fetch_orig musl "$MUSL_SUITE" "$MUSL_ORIG" "$MUSL_SHA256"
fetch_orig busybox "$BUSYBOX_SUITE" "$BUSYBOX_ORIG" "$BUSYBOX_SHA256"

step "unpack kernel source"
# The unpacked tree is only read (the build goes to linux-obj/), so it is reused while the tarball is unchanged.
KERNEL_TARBALL_SHA=$(sha256 "$KERNEL_TARBALL")
if [[ -f $WORK/linux-src/.tabvisor-unpacked ]] && [[ $(cat "$WORK/linux-src/.tabvisor-unpacked") == "$KERNEL_TARBALL_SHA" ]]; then
  echo "    reusing $WORK/linux-src"
else
  rm -rf "$WORK/linux-src" "$WORK/linux-src.tmp"
  mkdir -p "$WORK/linux-src.tmp"
  tar -xf "$KERNEL_TARBALL" -C "$WORK/linux-src.tmp" --strip-components=1
  echo "$KERNEL_TARBALL_SHA" >"$WORK/linux-src.tmp/.tabvisor-unpacked"
  mv "$WORK/linux-src.tmp" "$WORK/linux-src"
fi
KERNEL_VERSION=$(make -s -C "$WORK/linux-src" kernelversion | tail -n 1)
[[ $KERNEL_VERSION == 6.1.* ]] || die "expected a 6.1 kernel, linux-source-6.1 has $KERNEL_VERSION"
echo "    Linux $KERNEL_VERSION"

step "configure kernel"
rm -rf "$WORK/linux-obj"
mkdir -p "$WORK/linux-obj"
run_logged kernel-tinyconfig "${KMAKE[@]}" tinyconfig
run_logged kernel-merge env KCONFIG_CONFIG="$WORK/linux-obj/.config" \
  "$WORK/linux-src/scripts/kconfig/merge_config.sh" -m -O "$WORK/linux-obj" \
  "$WORK/linux-obj/.config" "$GUEST_DIR/kernel.fragment"
run_logged kernel-olddefconfig "${KMAKE[@]}" olddefconfig
# Every setting of the fragment must have survived olddefconfig (Kconfig silently drops unmet dependencies).
bad=0
while IFS= read -r line; do
  case $line in
    CONFIG_*=*)
      grep -qxF "$line" "$WORK/linux-obj/.config" || { echo "    kernel config lost: $line" >&2; bad=1; } ;;
    "# CONFIG_"*" is not set")
      opt=${line#\# }; opt=${opt%% *}
      if grep -q "^$opt=" "$WORK/linux-obj/.config"; then echo "    kernel config forced on: $opt" >&2; bad=1; fi ;;
  esac
done <"$GUEST_DIR/kernel.fragment"
((bad == 0)) || die "kernel.fragment does not apply cleanly to Linux $KERNEL_VERSION"

step "build kernel (make -j$JOBS Image)"
run_logged kernel-build "${KMAKE[@]}" Image
KIMAGE=$WORK/linux-obj/arch/riscv/boot/Image
[[ -s $KIMAGE ]] || die "kernel build produced no Image"
ls -l "$KIMAGE" | awk '{ print "    Image: " $5 " bytes" }'

step "kernel headers -> sysroot"
SYSROOT=$WORK/sysroot
rm -rf "$SYSROOT"
mkdir -p "$SYSROOT"
run_logged kernel-headers "${KMAKE[@]}" headers_install INSTALL_HDR_PATH="$SYSROOT"

step "build musl $MUSL_VERSION (riscv32)"
LIBGCC=$(riscv64-unknown-elf-gcc -march=rv32im -mabi=ilp32 -print-libgcc-file-name)
[[ $LIBGCC == */rv32im/ilp32/libgcc.a && -f $LIBGCC ]] || die "no rv32im/ilp32 libgcc in gcc-riscv64-unknown-elf (got $LIBGCC)"
rm -rf "$WORK/musl"
mkdir -p "$WORK/musl"
tar -xf "$WORK/downloads/$MUSL_ORIG" -C "$WORK/musl" --strip-components=1
(
  cd "$WORK/musl"
  run_logged musl-configure ./configure --target=riscv32-linux-musl --prefix="$SYSROOT" \
    --syslibdir="$SYSROOT/lib" --disable-shared \
    CC="riscv64-linux-gnu-gcc $ARCH_FLAGS" CROSS_COMPILE=riscv64-linux-gnu- LIBCC="$LIBGCC" \
    CFLAGS="-ffile-prefix-map=$WORK/musl=musl"
  run_logged musl-build make -j"$JOBS"
  run_logged musl-install make install
)
[[ -f $SYSROOT/lib/libc.a && -f $SYSROOT/lib/crt1.o ]] || die "musl install incomplete"

step "compiler wrapper"
GCC_INCLUDE=$(riscv64-linux-gnu-gcc -print-file-name=include)
CCW=$WORK/bin/riscv32-musl-gcc
mkdir -p "$WORK/bin"
cat >"$CCW" <<EOF
#!/bin/sh
# Generated by build-guest-image.sh: riscv64-linux-gnu-gcc as an rv32ima musl static compiler.
# Compiling: musl + kernel headers instead of glibc's. Linking: musl's crt files and libc.a plus rv32 libgcc,
# except for partial links (-r / -nostdlib), which must not get a second _start.
link=1 crt=1 libs=1
for a in "\$@"; do
  case "\$a" in
    -c|-S|-E|-M|-MM) link=0 ;;
    -r|-nostdlib) crt=0 libs=0 ;;
    -nostartfiles) crt=0 ;;
    -nodefaultlibs) libs=0 ;;
  esac
done
set -- $ARCH_FLAGS -ffile-prefix-map=$WORK/= -nostdinc -isystem "$SYSROOT/include" -isystem "$GCC_INCLUDE" "\$@"
if [ \$link = 0 ]; then exec riscv64-linux-gnu-gcc "\$@"; fi
pre= post=
if [ \$crt = 1 ]; then pre="$SYSROOT/lib/crt1.o $SYSROOT/lib/crti.o"; post="$SYSROOT/lib/crtn.o"; fi
if [ \$libs = 1 ]; then
  exec riscv64-linux-gnu-gcc -static -nostdlib \$pre "\$@" -L"$SYSROOT/lib" \\
    -Wl,--start-group -lc "$LIBGCC" -Wl,--end-group \$post
fi
exec riscv64-linux-gnu-gcc -nostdlib \$pre "\$@" \$post
EOF
chmod 755 "$CCW"
cat >"$WORK/hello.c" <<'EOF'
#include <stdio.h>
int main(void) { printf("hello from rv32 musl\n"); return 0; }
EOF
"$CCW" -O2 -o "$WORK/hello" "$WORK/hello.c" || die "the compiler wrapper cannot link a static hello world"
file "$WORK/hello" | grep -q 'ELF 32-bit LSB executable, UCB RISC-V.*statically linked' ||
  die "hello world is not a static 32-bit RISC-V executable: $(file "$WORK/hello")"

step "build busybox $BUSYBOX_VERSION"
BB=$WORK/busybox
rm -rf "$BB"
mkdir -p "$BB"
tar -xf "$WORK/downloads/$BUSYBOX_ORIG" -C "$BB" --strip-components=1
BBMAKE=(make -C "$BB" CROSS_COMPILE=riscv64-linux-gnu- CC="$CCW" HOSTCC=gcc KCONFIG_NOTIMESTAMP=1 -j"$JOBS")
run_logged busybox-defconfig "${BBMAKE[@]}" defconfig
# bb_set NAME y|n|"string": edit one option of busybox's .config.
bb_set() {
  local name=CONFIG_$1 val=$2 cfg=$BB/.config
  sed -i -e "/^$name=/d" -e "/^# $name is not set$/d" "$cfg"
  if [[ $val == n ]]; then echo "# $name is not set" >>"$cfg"; else echo "$name=$val" >>"$cfg"; fi
}
bb_set STATIC y
bb_set CROSS_COMPILER_PREFIX '"riscv64-linux-gnu-"'
bb_set EXTRA_CFLAGS '""'
# rv32 Linux has only the time64 syscalls: there is no settimeofday, so hwclock cannot be built.
bb_set HWCLOCK n
bb_set FEATURE_HWCLOCK_ADJTIME_FHS n
# No PAM, no shadow files, nothing that needs a dynamic loader.
bb_set PAM n
bb_set FEATURE_SHADOWPASSWDS n
bb_set USE_BB_SHADOW n
{ yes '' || true; } | run_logged busybox-oldconfig "${BBMAKE[@]}" oldconfig
run_logged busybox-build "${BBMAKE[@]}" busybox busybox.links
[[ -x $BB/busybox ]] || die "busybox did not build"
file "$BB/busybox" | grep -q 'ELF 32-bit LSB executable, UCB RISC-V.*statically linked' ||
  die "busybox is not a static 32-bit RISC-V executable: $(file "$BB/busybox")"
# Strip the date line kconfig writes in the header, so the published config is stable.
grep -v '^# .*[0-9][0-9]:[0-9][0-9]:[0-9][0-9]' "$BB/.config" >"$WORK/busybox.config"
for applet in sh ash init cttyhack setsid mount mountpoint hostname ip ifconfig udhcpc ifplugd flock readlink ping nc wget httpd devmem \
  top free dd md5sum vi poweroff reboot; do
  grep -qx "/[a-z/]*/$applet" "$BB/busybox.links" || die "busybox lacks the applet '$applet'"
done
echo "    $(wc -l <"$BB/busybox.links") applets, $(stat -c %s "$BB/busybox") bytes"

step "verify instruction sets"
OBJDUMP=riscv64-linux-gnu-objdump
# check_isa FILE NAME [SKIP]: the ELF says "no RVC, soft float" (e_flags 0), its arch attribute (if any) names
# no F/D/Q/C, and in the disassembly of every executable section there is no 16-bit parcel (other than zero
# padding), no word the disassembler cannot decode, no F/D instruction and no access to the FP CSRs.
# SKIP names a symbol whose body is data, not code (the kernel's Image header at _start).
check_isa() {
  local f=$1 name=$2 skip=${3:-} dis=$WORK/logs/$2.dis
  local flags
  flags=$(riscv64-linux-gnu-readelf -h "$f" | sed -n 's/^ *Flags: *//p')
  [[ $flags == 0x0 ]] || die "$name: ELF flags are '$flags', expected 0x0 (no RVC, soft-float ABI)"
  local attr
  attr=$(riscv64-linux-gnu-readelf -A "$f" | sed -n 's/.*Tag_RISCV_arch: "\(.*\)"/\1/p')
  if [[ -n $attr ]]; then
    [[ $attr == rv32i*_m*_a* ]] || die "$name: unexpected ISA attribute $attr"
    [[ $attr != *_[fdqc][0-9]* ]] || die "$name: ISA attribute $attr names F, D, Q or C"
  fi
  $OBJDUMP -d -M no-aliases "$f" |
    awk -v skip="<$skip>:" 'skip != "<>:" && index($0, skip) { s = 1; next } s && /^[0-9a-f]+ <.*>:$/ { s = 0 } !s' >"$dis"
  local total short bad fp
  total=$(grep -cE '^ *[0-9a-f]+:\s+[0-9a-f]+\s' "$dis" || true)
  short=$(grep -E '^ *[0-9a-f]+:\s+[0-9a-f]{4}\s' "$dis" | grep -vcE '\s0000\s' || true)
  bad=$(grep -cE '^ *[0-9a-f]+:\s+[0-9a-f]{8}\s+(\.4byte|\.insn|unknown)' "$dis" || true)
  fp=$(grep -cE '^ *[0-9a-f]+:\s+[0-9a-f]{8}\s+(f(l[whdq]|s[whdq]|madd|msub|nmadd|nmsub|add|sub|mul|div|sqrt|sgnj[nx]?|min|max|cvt|mv|eq|lt|le|class)\.|csrr?[sc]?i?\s.*\b(fcsr|frm|fflags)\b)' "$dis" || true)
  echo "    $name: flags $flags, arch attribute ${attr:-<none>}"
  echo "    $name: $total instructions; compressed $short, undecodable $bad, floating-point $fp"
  ((total > 1000)) || die "$name: disassembly looks empty"
  ((short == 0)) || die "$name contains compressed (C extension) instructions, see $dis"
  ((bad == 0)) || die "$name contains words that are no RV32IMA instruction, see $dis"
  ((fp == 0)) || die "$name contains floating-point instructions, see $dis"
}
check_isa "$WORK/linux-obj/vmlinux" vmlinux _start
check_isa "$BB/busybox_unstripped" busybox

step "assemble root file system"
ROOTFS=$WORK/rootfs
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
for d in bin sbin usr/bin usr/sbin usr/share/udhcpc etc/init.d etc/ifplugd dev proc sys tmp run root mnt var/log home; do
  mkdir -p "$ROOTFS/$d"
done
chmod 1777 "$ROOTFS/tmp"
chmod 700 "$ROOTFS/root"
install -m 755 "$BB/busybox" "$ROOTFS/bin/busybox"
# One symlink per applet, relative so the tree works wherever it is mounted.
while IFS= read -r link; do
  link=${link#/}
  [[ $link == bin/busybox ]] && continue
  dir=$(dirname "$link")
  up=$(echo "$dir" | sed -e 's#[^/][^/]*#..#g')
  ln -sfn "$up/bin/busybox" "$ROOTFS/$link"
done <"$BB/busybox.links"
# Committed guest files: scripts executable, everything else read-only data.
(cd "$GUEST_DIR/rootfs" && find . -type f | sort) | while IFS= read -r f; do
  f=${f#./}
  mode=644
  case $f in etc/init.d/*|etc/ifplugd/*|usr/share/udhcpc/*) mode=755 ;; esac
  install -D -m "$mode" "$GUEST_DIR/rootfs/$f" "$ROOTFS/$f"
done
# The kernel runs /init from an initramfs and /sbin/init from a disk: both are busybox init.
ln -sfn bin/busybox "$ROOTFS/init"
ln -sfn /run "$ROOTFS/var/run"
# The kernel opens /dev/console for init before anything mounts devtmpfs.
mknod -m 600 "$ROOTFS/dev/console" c 5 1
mknod -m 666 "$ROOTFS/dev/null" c 1 3
chown -R 0:0 "$ROOTFS"
find "$ROOTFS" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

step "initramfs (cpio newc, gzip)"
STAGE=$WORK/out
rm -rf "$STAGE"
mkdir -p "$STAGE"
(cd "$ROOTFS" && find . -mindepth 1 | sed 's#^\./##' | sort |
  cpio --quiet --reproducible -o -H newc --owner=0:0) >"$STAGE/initramfs.cpio"
gzip -n -9 -c "$STAGE/initramfs.cpio" >"$STAGE/initramfs.cpio.gz"

step "root disk image (ext2, 32 MiB)"
# genext2fs takes every time stamp from the files (all SOURCE_DATE_EPOCH) or from SOURCE_DATE_EPOCH, and writes
# no random UUID, so the image is reproducible.
genext2fs -B 1024 -b 32768 -N 2048 -m 0 -L tabvisor-root -U -d "$ROOTFS" "$STAGE/rootfs.ext2"
run_logged e2fsck e2fsck -fn "$STAGE/rootfs.ext2"
# Packed for the page's HTTP-range base image: a gzip file with one member per 32 KiB chunk (`gzip -dc` gives the
# image back) and an index of each chunk's member and sha256 (scripts/pack-disk-image.sh).
"$REPO/scripts/pack-disk-image.sh" "$STAGE/rootfs.ext2" "$STAGE/rootfs.ext2.chunked" "$STAGE/rootfs.ext2.chunks.json"

step "kernel image and configs"
gzip -n -9 -c "$KIMAGE" >"$STAGE/Image.gz"
cp "$WORK/linux-obj/.config" "$STAGE/kernel.config"
cp "$WORK/busybox.config" "$STAGE/busybox.config"

step "manifest"
# Image header (Documentation/riscv/boot-image-header.rst): u64 text_offset at 8, u64 image_size at 16.
u64_at() { od -An -t u8 -j "$2" -N 8 "$1" | tr -d ' '; }
[[ $(dd if="$KIMAGE" bs=1 skip=56 count=3 status=none) == RSC ]] ||
  die "arch/riscv/boot/Image has no RISC-V image header"
LOAD_OFFSET=$(u64_at "$KIMAGE" 8)
IMAGE_SIZE=$(u64_at "$KIMAGE" 16)
((IMAGE_SIZE >= $(stat -c %s "$KIMAGE"))) || die "image_size $IMAGE_SIZE is smaller than the Image file"
INITRD_SIZE=$(stat -c %s "$STAGE/initramfs.cpio")
INITRD_GZ_SIZE=$(stat -c %s "$STAGE/initramfs.cpio.gz")
# Minimum RAM: the kernel's image_size (text, data, bss), the compressed initrd it is handed, the unpacked
# initramfs in page cache, plus 24 MiB for page tables, slab, per-hart stacks and the first processes.
# Measured under QEMU (scripts/qemu-boot-check.sh), boot to a shell needs far less; this is the generous figure.
MIB=$((1024 * 1024))
MIN_MIB=$(( (IMAGE_SIZE + INITRD_GZ_SIZE + INITRD_SIZE + 24 * MIB + MIB - 1) / MIB ))
MIN_MIB=$(( (MIN_MIB + 7) / 8 * 8 ))
KGZ=$(stat -c %s "$STAGE/Image.gz")
((KGZ + INITRD_GZ_SIZE < 4000000)) || die "Image.gz + initramfs.cpio.gz = $((KGZ + INITRD_GZ_SIZE)) bytes, over 4 MB"

file_entry() { # file_entry ROLE FILE UNCOMPRESSED|-
  local role=$1 path=$2 raw=$3 comp size sum usize usum
  size=$(stat -c %s "$STAGE/$path")
  sum=$(sha256 "$STAGE/$path")
  if [[ $raw == - ]]; then
    comp=null; usize=$size; usum=$sum
  else
    comp='"gzip"'; usize=$(stat -c %s "$raw"); usum=$(sha256 "$raw")
    # the .gz must decompress to exactly what we describe
    [[ $(gzip -dc "$STAGE/$path" | sha256sum | cut -d' ' -f1) == "$usum" ]] || die "$path does not match $raw"
  fi
  printf '    { "role": "%s", "path": "%s", "size": %d, "sha256": "%s", "compression": %s, "uncompressedSize": %d, "uncompressedSha256": "%s" }' \
    "$role" "$path" "$size" "$sum" "$comp" "$usize" "$usum"
}
chunked_entry() { # chunked_entry ROLE FILE INDEX UNCOMPRESSED: a pack-disk-image.sh image (gzip members + index)
  local role=$1 path=$2 index=$3 raw=$4
  [[ $(gzip -dc "$STAGE/$path" | sha256sum | cut -d' ' -f1) == "$(sha256 "$raw")" ]] || die "$path does not match $raw"
  printf '    { "role": "%s", "path": "%s", "size": %d, "sha256": "%s", "compression": "gzip-chunks", "index": "%s", "indexSha256": "%s", "uncompressedSize": %d, "uncompressedSha256": "%s" }' \
    "$role" "$path" "$(stat -c %s "$STAGE/$path")" "$(sha256 "$STAGE/$path")" "$index" "$(sha256 "$STAGE/$index")" \
    "$(stat -c %s "$raw")" "$(sha256 "$raw")"
}
{
  echo '{'
  echo '  "format": 1,'
  echo '  "name": "tabvisor-default",'
  echo "  \"kernelVersion\": \"$KERNEL_VERSION\","
  echo "  \"busyboxVersion\": \"$BUSYBOX_VERSION\","
  echo "  \"muslVersion\": \"$MUSL_VERSION\","
  echo '  "arch": "rv32ima",'
  echo '  "isa": "rv32ima_zicsr_zifencei",'
  echo '  "bootargs": "console=hvc1 earlycon=sbi keep_bootcon sysctl.kernel.printk=4",'
  echo "  \"memoryMiB\": { \"minimum\": $MIN_MIB, \"default\": 128 },"
  echo "  \"kernelImage\": { \"loadOffset\": $LOAD_OFFSET, \"imageSize\": $IMAGE_SIZE },"
  echo '  "files": ['
  file_entry kernel Image.gz "$KIMAGE"; echo ','
  file_entry initrd initramfs.cpio.gz "$STAGE/initramfs.cpio"; echo ','
  chunked_entry rootfs rootfs.ext2.chunked rootfs.ext2.chunks.json "$STAGE/rootfs.ext2"; echo ','
  file_entry kernel-config kernel.config -; echo ','
  file_entry busybox-config busybox.config -; echo
  echo '  ],'
  printf '  "reproducibility": "%s"\n' "$(tr '\n' ' ' <"$GUEST_DIR/reproducibility.txt" | sed -e 's/ *$//' -e 's/"/\\"/g')"
  echo '}'
} >"$STAGE/manifest.json"

step "publish to ${OUT#"$REPO"/}"
for f in Image.gz initramfs.cpio.gz rootfs.ext2.chunked rootfs.ext2.chunks.json kernel.config busybox.config \
  manifest.json; do
  cp "$STAGE/$f" "$OUT/$f.tmp"
  mv -f "$OUT/$f.tmp" "$OUT/$f"
done
rm -f "$OUT/rootfs.ext2.gz" # the root disk's format before rootfs.ext2.chunked
finish_step
echo
ls -l "$OUT"
echo "build-guest-image: Linux $KERNEL_VERSION, busybox $BUSYBOX_VERSION, musl $MUSL_VERSION; total $(elapsed "$START")s"
