#!/usr/bin/env bash
# The gateway's memory while 1 GiB streams through it, each way: a sealed PUT of 1 GiB
# to a plain upstream (scripts/upstream-sink.py, which keeps only a SHA-256 of what it
# reads), then a sealed GET of 1 GiB from it. The gateway's resident set (VmRSS) is
# sampled every 50 ms; the growth over its size after a small warm-up is printed.
#
#   scripts/gateway-rss.sh                # 1 GiB each way
#   BYTES=268435456 scripts/gateway-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BYTES=${BYTES:-1073741824}
cargo build --release --quiet --bin sessioncert
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/sessioncert
TMP=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
U=$(free_port) G=$(free_port)
python3 scripts/upstream-sink.py "$U" & UP=$!
RUST_LOG=warn "$BIN" gateway --upstream "http://127.0.0.1:$U" --addr "127.0.0.1:$G" \
  --data "$TMP/data" --memory >"$TMP/gateway.log" 2>&1 & GW=$!
trap 'kill $GW $UP 2>/dev/null; wait $GW $UP 2>/dev/null || true; rm -rf "$TMP"' EXIT
for p in "$U" "$G"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
PIN=$("$BIN" fingerprint --data "$TMP/data")
URL=http://127.0.0.1:$G
rss() { awk '/VmRSS/{print $2}' "/proc/$GW/status"; }

# Warm-up: a handshake and an 8 MiB round trip (allocator arenas, buffers, the pool).
WARM=${WARM:-8388608}
head -c "$WARM" /dev/zero | "$BIN" request --pin "$PIN" -X PUT --data-binary @- "$URL/warm" >/dev/null
"$BIN" request --pin "$PIN" -o /dev/null "$URL/download?bytes=$WARM"
BASE=$(rss)
( peak=0; while kill -0 "$GW" 2>/dev/null; do r=$(rss); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$TMP/peak"; sleep 0.05; done ) &
SAMPLER=$!

START=$(date +%s.%N)
OUT=$(head -c "$BYTES" /dev/zero | "$BIN" request --pin "$PIN" -X PUT --data-binary @- "$URL/upload")
UP_S=$(python3 -c "import time; print(f'{time.time() - $START:.2f}')")
WANT=$(head -c "$BYTES" /dev/zero | sha256sum | cut -d' ' -f1)
python3 - "$OUT" "$BYTES" "$WANT" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["bytes"] == int(sys.argv[2]) and r["sha256"] == sys.argv[3], r
PY
UP_PEAK=$(cat "$TMP/peak")
START=$(date +%s.%N)
GOT=$("$BIN" request --pin "$PIN" "$URL/download?bytes=$BYTES" | wc -c)
DOWN_S=$(python3 -c "import time; print(f'{time.time() - $START:.2f}')")
[ "$GOT" = "$BYTES" ] || { echo "download: got $GOT of $BYTES bytes"; exit 1; }
sleep 0.1
kill $SAMPLER 2>/dev/null || true
PEAK=$(cat "$TMP/peak")
mib() { python3 -c "print(f'{$1/1024:.1f}')"; }
echo "gateway RSS after warm-up $(mib "$BASE") MiB;" \
  "upload of $BYTES B in ${UP_S}s: peak $(mib "$UP_PEAK") MiB (+$(mib $((UP_PEAK - BASE))) MiB);" \
  "download in ${DOWN_S}s: peak $(mib "$PEAK") MiB (+$(mib $((PEAK - BASE))) MiB over the start)"
