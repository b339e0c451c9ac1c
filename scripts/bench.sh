#!/usr/bin/env bash
# Reproduces the README's speed figures in one run on this machine:
#   1. handshakes/s of `sessioncert bench handshake` against the seed's per-handshake
#      cost (one RSA-4096 key generation, timed here with openssl)
#   2. handshakes/s against a lean one-round-trip Noise NK server (scripts/bench-handshake.sh:
#      three alternating pairs at concurrency 4 and 8, median ratio), unless --no-lean
#   3. sealed POST /apiTest vs the same handler unsealed at /plain/apiTest (1 KiB body)
#   4. the core's criterion benches (seal/open throughput vs raw primitives), unless --no-criterion
# Client and server share this machine's cores; absolute figures drift between runs,
# ratios measured in the same run are what to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
NO_CRITERION= NO_LEAN=
for arg in "$@"; do
  case "$arg" in
    --no-criterion) NO_CRITERION=1 ;;
    --no-lean) NO_LEAN=1 ;;
    *) echo "usage: $0 [--no-criterion] [--no-lean]" >&2; exit 2 ;;
  esac
done
cargo build --release --quiet --bin sessioncert
BIN=$PWD/target/release/sessioncert
DATA=$(mktemp -d); PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --addr "127.0.0.1:$PORT" --data "$DATA" >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
PIN=$("$BIN" fingerprint --data "$DATA")

echo "== handshakes (one round trip: hello -> server hello with ticket), concurrency 4 and 8"
HS4=$("$BIN" bench handshake --url "http://127.0.0.1:$PORT" --pin "$PIN" --duration "$DURATION" --concurrency 4 --json)
HS8=$("$BIN" bench handshake --url "http://127.0.0.1:$PORT" --pin "$PIN" --duration "$DURATION" --concurrency 8 --json)
t0=$(date +%s.%N); for _ in 1 2 3; do openssl genrsa 4096 >/dev/null 2>&1; done; t1=$(date +%s.%N)
python3 - "$HS4" "$HS8" "$t0" "$t1" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
seed = 3 / (float(sys.argv[4]) - float(sys.argv[3]))
for c, r in ((4, a), (8, b)):
    print(f"  c={c}: {r['handshakes_per_sec']:.0f}/s (p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']})"
          f" = {r['handshakes_per_sec']/seed:,.0f}x the seed's RSA-4096-per-handshake ({seed:.2f}/s)")
PY

# The handshake is stateless: none of those handshakes was confirmed, so the server must
# hold no session for any of them.
sleep 0.3
"$BIN" sessions list --data "$DATA" --json >"$DATA/sessions.json"
python3 - "$HS4" "$HS8" "$DATA/sessions.json" <<'PY'
import json, sys
made = json.loads(sys.argv[1])["count"] + json.loads(sys.argv[2])["count"]
rows = [r for r in json.load(open(sys.argv[3])) if r["state"] == "established"]
print(f"  server stored {len(rows)} sessions for {made} unconfirmed handshakes (stateless: expected 0)")
PY

if [ -z "$NO_LEAN" ]; then
  DURATION="$DURATION" scripts/bench-handshake.sh
fi

echo "== sealed vs plain POST /apiTest, 1 KiB body, concurrency 32 (three alternating pairs)"
for i in 1 2 3; do
  S=$("$BIN" bench request --url "http://127.0.0.1:$PORT/apiTest" --pin "$PIN" --duration "$DURATION" --concurrency 32 --body 1024 --json)
  P=$("$BIN" bench request --url "http://127.0.0.1:$PORT/plain/apiTest" --plain --duration "$DURATION" --concurrency 32 --body 1024 --json)
  python3 - "$S" "$P" <<'PY'
import json, sys
s, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert s["errors"] == 0 and p["errors"] == 0, (s, p)
print(f"  sealed {s['requests_per_sec']:.0f}/s (p99 {s['p99_ms']} ms)  plain {p['requests_per_sec']:.0f}/s (p99 {p['p99_ms']} ms)"
      f"  ratio {s['requests_per_sec']/p['requests_per_sec']:.2f}")
PY
done
S=$("$BIN" bench request --url "http://127.0.0.1:$PORT/apiTest" --pin "$PIN" --full --duration "$DURATION" --concurrency 32 --body 1024 --json)
echo "  full-request mode: $(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["requests_per_sec"]))' "$S")/s"

if [ -z "$NO_CRITERION" ]; then
  echo "== core benches (criterion)"
  cargo bench -p sessioncert-proto --bench core 2>/dev/null | grep -E "^[a-z0-9_/ -]+$|time:|thrpt:" || true
fi
