#!/usr/bin/env bash
# Legacy Session-Cert mode's speed beside the real protocol's, in one run on this machine,
# against one `serve --legacy-session-cert` (SQLite in a scratch data directory):
#   1. handshakes/s: legacy (public key, RSA-OAEP-wrapped key, establish: three round
#      trips and a stored session each) and the real protocol's (one round trip; its
#      session is stored with the first request's confirmation, not measured here)
#   2. POST /apiTest with a 1 KiB body: legacy (CryptoJS AES-256-CBC, each answer
#      decrypted by the load generator), sealed, and plain (/plain/apiTest)
# Three alternating rounds; the medians are printed. Client and server share this
# machine's cores: compare ratios from the same run, not absolute figures across runs.
#
#   scripts/bench-legacy.sh            (DURATION=5s by default; CONCURRENCY=32 for requests)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONCURRENCY=${CONCURRENCY:-32}
cargo build --release --quiet --bin sessioncert
BIN=$PWD/target/release/sessioncert
DATA=$(mktemp -d); PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Every legacy handshake leaves a session (30 min idle): room for all the runs make.
"$BIN" serve --legacy-session-cert --legacy-max-sessions 1000000 --addr "127.0.0.1:$PORT" --data "$DATA/data" >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
PIN=$("$BIN" fingerprint --data "$DATA/data")
URL="http://127.0.0.1:$PORT"

RESULTS="$DATA/results.jsonl"
for round in 1 2 3; do
  echo "== round $round"
  for kind in legacy-hs modern-hs legacy sealed plain; do
    case $kind in
      legacy-hs) out=$("$BIN" bench handshake --url "$URL" --legacy --duration "$DURATION" --concurrency 8 --json) ;;
      modern-hs) out=$("$BIN" bench handshake --url "$URL" --pin "$PIN" --duration "$DURATION" --concurrency 8 --json) ;;
      legacy) out=$("$BIN" bench request --url "$URL/apiTest" --legacy --duration "$DURATION" --concurrency "$CONCURRENCY" --body 1024 --json) ;;
      sealed) out=$("$BIN" bench request --url "$URL/apiTest" --pin "$PIN" --duration "$DURATION" --concurrency "$CONCURRENCY" --body 1024 --json) ;;
      plain) out=$("$BIN" bench request --url "$URL/plain/apiTest" --plain --duration "$DURATION" --concurrency "$CONCURRENCY" --body 1024 --json) ;;
    esac
    echo "  $kind $out"
    echo "{\"kind\":\"$kind\",\"r\":$out}" >>"$RESULTS"
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(kind, key):
    rs = [r["r"] for r in rows if r["kind"] == kind]
    assert all(r["errors"] == 0 for r in rs), (kind, rs)
    return statistics.median(r[key] for r in rs), statistics.median(r["p99_ms"] for r in rs)
lh, lh99 = med("legacy-hs", "handshakes_per_sec")
mh, mh99 = med("modern-hs", "handshakes_per_sec")
lr, lr99 = med("legacy", "requests_per_sec")
sr, sr99 = med("sealed", "requests_per_sec")
pr, pr99 = med("plain", "requests_per_sec")
print("== medians of 3 rounds")
print(f"  handshakes/s (c=8): legacy {lh:.0f} (p99 {lh99} ms), real protocol {mh:.0f} (p99 {mh99} ms); legacy/real {lh/mh:.2f}")
print(f"  requests/s (1 KiB): legacy {lr:.0f} (p99 {lr99} ms), sealed {sr:.0f} (p99 {sr99} ms), plain {pr:.0f} (p99 {pr99} ms)")
print(f"  legacy/sealed {lr/sr:.2f}, legacy/plain {lr/pr:.2f}, sealed/plain {sr/pr:.2f}")
print(f"  against the original prototype on this machine (1.3 handshakes/s, 455 requests/s with its MySQL store, issue 16): "
      f"{lh/1.3:,.0f}x handshakes, {lr/455:.1f}x requests")
PY
