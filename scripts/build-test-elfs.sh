#!/usr/bin/env bash
# Build tabvisor's bare-metal RV32 test programs: test/fixtures/elf/src/*.S -> test/fixtures/elf/*.elf.
#
# Needs only GNU binutils for RISC-V (Debian: binutils-riscv64-unknown-elf or binutils-riscv64-linux-gnu); they
# are installed with apt-get when missing. The outputs are committed, so this runs only when a source changes.
#
#   scripts/build-test-elfs.sh           build the fixtures
#   scripts/build-test-elfs.sh --qemu    also cross-check every program under qemu-system-riscv32 (spike machine)
#                                        in a second build that writes HTIF's low word first (QEMU's order) and
#                                        tolerates QEMU 7.2's known deviations (QEMU_QUIRKS, listed in the README)
set -euo pipefail

cd "$(dirname "$0")/.."
SRC=test/fixtures/elf/src
OUT=test/fixtures/elf
ARCH=(-march=rv32ima_zicsr_zifencei -mabi=ilp32)

find_tool() {
  local tool=$1 prefix
  for prefix in riscv64-unknown-elf riscv64-linux-gnu riscv32-unknown-elf; do
    if command -v "$prefix-$tool" >/dev/null 2>&1; then
      echo "$prefix-$tool"
      return 0
    fi
  done
  return 1
}

apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  echo "installing $* with apt-get" >&2
  "${sudo[@]}" apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "$@" >&2
}

if ! AS=$(find_tool as) || ! LD=$(find_tool ld); then
  apt_install binutils-riscv64-unknown-elf
  AS=$(find_tool as) && LD=$(find_tool ld) || { echo "no RISC-V binutils found after apt-get install" >&2; exit 1; }
fi

# build <output dir> [extra assembler flags...]
build() {
  local dir=$1 src name obj
  shift
  local tmp
  tmp=$(mktemp -d)
  for src in "$SRC"/*.S; do
    name=$(basename "$src" .S)
    obj="$tmp/$name.o"
    "$AS" "${ARCH[@]}" -I "$SRC" "$@" -o "$obj" "$src"
    "$LD" -m elf32lriscv -T "$SRC/link.ld" -n --no-relax --build-id=none --no-warn-rwx-segments -o "$dir/$name.elf" "$obj"
  done
  rm -rf "$tmp"
}

build "$OUT"
echo "built: $(cd "$OUT" && ls -- *.elf | tr '\n' ' ')"

if [ "${1:-}" = "--qemu" ]; then
  if ! command -v qemu-system-riscv32 >/dev/null 2>&1; then apt_install qemu-system-misc; fi
  qdir=$(mktemp -d)
  build "$qdir" --defsym HTIF_LOW_FIRST=1 --defsym QEMU_QUIRKS=1
  status=0
  for elf in "$qdir"/*.elf; do
    name=$(basename "$elf" .elf)
    expect=0
    case $name in
      fail) expect=3 ;;
      spin) expect=124 ;; # killed by timeout
    esac
    set +e
    # C off: tabvisor has no compressed instructions, so a jump to pc+2 must fault as it does here.
    output=$(timeout 10 qemu-system-riscv32 -machine spike -cpu rv32,c=false -bios none -m 64M \
      -kernel "$elf" -nographic -monitor none -serial stdio 2>&1)
    rc=$?
    set -e
    if [ "$rc" -eq "$expect" ]; then
      echo "qemu: $name.elf exit $rc as expected${output:+ (console: ${output//$'\n'/\\n})}"
    else
      echo "qemu: $name.elf exit $rc, expected $expect${output:+ (console: ${output//$'\n'/\\n})}"
      status=1
    fi
  done
  rm -rf "$qdir"
  exit $status
fi
