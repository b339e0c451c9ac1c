#!/usr/bin/env bash
# CPU time per request on each side, sealed and plain: the server pinned to CPU 0, the
# load generator (`bench request`) to CPU 1, each side's user+system time read from the
# kernel (/proc for the server, time(1) for the load generator) and divided by the
# requests the run completed. Unlike requests/s, this says which side a change made
# cheaper or dearer.
#
#   scripts/cpu-per-request.sh                    # 1 KiB bodies, concurrency 32
#   BODY=65536 CONCURRENCY=16 scripts/cpu-per-request.sh
#   SERVER_BIN=old/sessioncert CLIENT_BIN=target/release/sessioncert scripts/cpu-per-request.sh
#
# Needs 2 CPUs and a quiet machine; each line is one 4 s run (PAIRS pairs).
set -euo pipefail
cd "$(dirname "$0")/.."
BODY=${BODY:-1024}; CONCURRENCY=${CONCURRENCY:-32}; PAIRS=${PAIRS:-2}; DURATION=${DURATION:-4s}
if [ -z "${SERVER_BIN:-}" ] || [ -z "${CLIENT_BIN:-}" ]; then
  cargo build --release --quiet --bin sessioncert
fi
SERVER_BIN=${SERVER_BIN:-$PWD/target/release/sessioncert}
CLIENT_BIN=${CLIENT_BIN:-$PWD/target/release/sessioncert}
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn taskset -c 0 "$SERVER_BIN" serve --addr "127.0.0.1:$PORT" --data "$DATA" --max-body 4MiB >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
PIN=$("$SERVER_BIN" fingerprint --data "$DATA")
ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
run() { # label, then bench args
  local label=$1; shift
  local before after out
  before=$(ticks)
  out=$( { /usr/bin/time -f "%U %S" taskset -c 1 "$CLIENT_BIN" bench request --duration "$DURATION" \
           --concurrency "$CONCURRENCY" --body "$BODY" --json --progress 0s "$@"; } 2>"$DATA/time")
  after=$(ticks)
  python3 - "$label" "$out" "$(tail -1 "$DATA/time")" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
label, out, times, before, after, tck = sys.argv[1:]
r = json.loads(out); n = r["count"]
user, system = map(float, times.split())
server = (int(after) - int(before)) / int(tck)
print(f"{label:6} {r['requests_per_sec']:9,.0f} req/s   client {1e6*(user+system)/n:6.1f} µs/req "
      f"(user {1e6*user/n:.1f}, system {1e6*system/n:.1f})   server {1e6*server/n:6.1f} µs/req")
PY
}
echo "body $BODY B, concurrency $CONCURRENCY; server $SERVER_BIN on CPU 0, load generator $CLIENT_BIN on CPU 1"
for _ in $(seq "$PAIRS"); do
  run sealed --url "http://127.0.0.1:$PORT/apiTest" --pin "$PIN"
  run plain --url "http://127.0.0.1:$PORT/plain/apiTest" --plain
done
