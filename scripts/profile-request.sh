#!/usr/bin/env bash
# Where a request's server CPU goes: runs `sessioncert serve` under callgrind, drives it
# with `bench request` (sealed, then plain, against the same process), and prints the
# server's instructions per request for each, then the top functions of the sealed run.
# Instruction counts do not depend on the machine's load, so this can be rerun anywhere
# and compared (they undercount SIMD-heavy code such as AES-GCM: a rough map, not time).
#
#   scripts/profile-request.sh              # 1 KiB bodies
#   BODY=65536 scripts/profile-request.sh
#
# Needs valgrind (apt-get install valgrind). Builds a release binary with line tables in
# target/profile (kept apart from target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
BODY=${BODY:-1024}
DURATION=${DURATION:-6s}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/profile}
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --quiet --bin sessioncert
BIN=$CARGO_TARGET_DIR/release/sessioncert
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=${RUST_LOG:-info} valgrind --tool=callgrind --callgrind-out-file="$DATA/cg.%p" \
  "$BIN" serve --addr "127.0.0.1:$PORT" --data "$DATA" --max-body 4MiB >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
PIN=$("$BIN" fingerprint --data "$DATA")
U=http://127.0.0.1:$PORT
# requests answered, by mode, from the server's own histogram
count() { curl -fs "$U/metrics" | awk -v m="mode=\"$1\"" 'index($0, "sessioncert_request_duration_seconds_count") == 1 && index($0, m) {s+=$2} END {print s+0}'; }
run() { # $1 label, then bench args
  local label=$1; shift
  "$BIN" bench request --duration 2s --concurrency 4 --body "$BODY" --progress 0s "$@" >/dev/null 2>&1 || true # warm-up
  local before; before=$(count "$label")
  callgrind_control -z "$SERVER" >/dev/null 2>&1
  "$BIN" bench request --duration "$DURATION" --concurrency 4 --body "$BODY" --progress 0s "$@" >/dev/null
  callgrind_control -d "$label" "$SERVER" >/dev/null 2>&1
  local after; after=$(count "$label")
  local file; file=$(ls -t "$DATA"/cg.* | head -1)
  local ir; ir=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
  echo "$label: $((after - before)) requests, $((ir / (after - before))) instructions per request (server)"
  cp "$file" "$CARGO_TARGET_DIR/profile-$label.out"
}
run sealed --url "$U/apiTest" --pin "$PIN"
run plain --url "$U/plain/apiTest" --plain
echo "== functions by own instructions, sealed run (whole profiles: $CARGO_TARGET_DIR/profile-{sealed,plain}.out)"
callgrind_annotate --inclusive=no "$CARGO_TARGET_DIR/profile-sealed.out" 2>/dev/null \
  | grep -E '^ *[0-9,]+ \(' | sed -n '2,31p'

