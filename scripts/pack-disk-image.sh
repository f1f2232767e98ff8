#!/usr/bin/env bash
# Pack a raw disk image for the page's HTTP-range base image (src/storage/chunked-image.ts):
#
#   scripts/pack-disk-image.sh RAW DATA INDEX [CHUNK_BYTES]
#
# DATA is one gzip file made of many members (RFC 1952 section 2.2): one member per CHUNK_BYTES chunk of RAW
# that holds any non-zero byte, and one member per run of all-zero chunks. `gzip -dc DATA` gives RAW back, so
# tools that want the whole image (the CLI's --disk, QEMU) just decompress it; the page fetches single members
# with HTTP Range requests and never fetches a zero chunk.
#
# INDEX is JSON: { "format": "tabvisor-gzip-chunks", "version": 1, "data": <DATA's file name>, "dataSize",
# "dataSha256", "size" (RAW's bytes), "sha256" (of RAW), "chunkSize", "chunks": [...] } where chunk i is null
# when it is all zeroes, else [offset, length, sha256]: its member is DATA[offset, offset + length) and its
# uncompressed bytes (chunkSize, or what is left for the last chunk) have that sha256.
#
# Deterministic: gzip -n stores no name and no time, so the same RAW and the same gzip give the same bytes.
set -Eeuo pipefail

die() { echo "pack-disk-image: $*" >&2; exit 1; }
(($# == 3 || $# == 4)) || die "usage: $0 RAW DATA INDEX [CHUNK_BYTES]"
RAW=$1 DATA=$2 INDEX=$3 CHUNK=${4:-32768}
[[ -f $RAW ]] || die "$RAW: no such file"
((CHUNK >= 4096 && CHUNK <= 4194304 && (CHUNK & (CHUNK - 1)) == 0)) ||
  die "CHUNK_BYTES must be a power of two from 4096 to 4194304, not $CHUNK"
SIZE=$(stat -c %s "$RAW")
((SIZE > 0 && SIZE % 512 == 0)) || die "$RAW is $SIZE bytes, not a positive multiple of 512"
export LC_ALL=C

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
split -b "$CHUNK" -a 8 -d "$RAW" "$TMP/c."
: >"$DATA.tmp"
entries=()
zero_run=0
flush_zero_run() { # one member for the run of all-zero chunks just ended
  if ((zero_run > 0)); then
    head -c $((zero_run * CHUNK)) /dev/zero | gzip -n -9 >>"$DATA.tmp"
    zero_run=0
  fi
}
for part in "$TMP"/c.*; do
  len=$(stat -c %s "$part")
  if cmp -s -n "$len" "$part" /dev/zero; then
    if ((len != CHUNK)); then # a short last chunk: a member of its own keeps `gzip -dc` exact
      flush_zero_run
      head -c "$len" /dev/zero | gzip -n -9 >>"$DATA.tmp"
    else
      zero_run=$((zero_run + 1))
    fi
    entries+=("null")
  else
    flush_zero_run
    offset=$(stat -c %s "$DATA.tmp")
    gzip -n -9 -c "$part" >>"$DATA.tmp"
    entries+=("[$offset, $(($(stat -c %s "$DATA.tmp") - offset)), \"$(sha256sum <"$part" | cut -d' ' -f1)\"]")
  fi
done
flush_zero_run

SUM=$(sha256sum <"$RAW" | cut -d' ' -f1)
[[ $(gzip -dc "$DATA.tmp" | sha256sum | cut -d' ' -f1) == "$SUM" ]] || die "the packed image does not decompress to $RAW"
{
  echo '{'
  echo '  "format": "tabvisor-gzip-chunks",'
  echo '  "version": 1,'
  echo "  \"data\": \"$(basename "$DATA")\","
  echo "  \"dataSize\": $(stat -c %s "$DATA.tmp"),"
  echo "  \"dataSha256\": \"$(sha256sum <"$DATA.tmp" | cut -d' ' -f1)\","
  echo "  \"size\": $SIZE,"
  echo "  \"sha256\": \"$SUM\","
  echo "  \"chunkSize\": $CHUNK,"
  echo '  "chunks": ['
  last=$((${#entries[@]} - 1))
  for i in "${!entries[@]}"; do
    if ((i == last)); then echo "    ${entries[$i]}"; else echo "    ${entries[$i]},"; fi
  done
  echo '  ]'
  echo '}'
} >"$INDEX.tmp"
mv -f "$DATA.tmp" "$DATA"
mv -f "$INDEX.tmp" "$INDEX"
