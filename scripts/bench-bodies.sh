#!/usr/bin/env bash
# Sealed vs plain requests/s by body size, measured in one run against one server:
# `bench request` POSTs a body of each size to the demo echo (/apiTest, whose answer
# carries the body back) and to the same handler unsealed (/plain/apiTest), alternating
# sealed and plain in PAIRS pairs per size; the median ratio of each size is printed.
#
#   scripts/bench-bodies.sh                 # 1 KiB, 64 KiB and 1 MiB, 5 pairs of 2 s
#   SIZES="65536" PAIRS=3 CONCURRENCY=16 scripts/bench-bodies.sh
#   TASKSET=1 scripts/bench-bodies.sh       # server on CPU 0, load generator on CPU 1
#
# Client and server share this machine's cores; ratios measured in the same run are what
# to compare, not absolute rates.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"1024 65536 1048576"}
PAIRS=${PAIRS:-5}
DURATION=${DURATION:-2s}
CONCURRENCY=${CONCURRENCY:-16}
SERVER_CPU=() CLIENT_CPU=()
if [ -n "${TASKSET:-}" ]; then SERVER_CPU=(taskset -c 0) CLIENT_CPU=(taskset -c 1); fi
cargo build --release --quiet --bin sessioncert
BIN=$PWD/target/release/sessioncert
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Access lines off: they cost the same for sealed and plain and would only blur the ratio
# (README, Benchmarks).
RUST_LOG=${RUST_LOG:-info,sessioncert::access=off} "${SERVER_CPU[@]}" "$BIN" serve \
  --addr "127.0.0.1:$PORT" --data "$DATA" --max-body 4MiB >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
PIN=$("$BIN" fingerprint --data "$DATA")
U=http://127.0.0.1:$PORT

for size in $SIZES; do
  pairs=()
  for _ in $(seq "$PAIRS"); do
    s=$("${CLIENT_CPU[@]}" "$BIN" bench request --url "$U/apiTest" --pin "$PIN" \
      --duration "$DURATION" --concurrency "$CONCURRENCY" --body "$size" --json)
    p=$("${CLIENT_CPU[@]}" "$BIN" bench request --url "$U/plain/apiTest" --plain \
      --duration "$DURATION" --concurrency "$CONCURRENCY" --body "$size" --json)
    pairs+=("$s" "$p")
  done
  python3 - "$size" "${pairs[@]}" <<'PY'
import json, statistics, sys
size, runs = int(sys.argv[1]), [json.loads(x) for x in sys.argv[2:]]
sealed, plain = runs[0::2], runs[1::2]
for r in runs:
    assert r["errors"] == 0, r
ratios = [s["requests_per_sec"] / p["requests_per_sec"] for s, p in zip(sealed, plain)]
mib = lambda r: r["requests_per_sec"] * size * 2 / 2**20  # body up and the echo back
print(f"{size:>8} B: sealed/plain median {statistics.median(ratios):.2f}"
      f" (pairs {' '.join(f'{x:.2f}' for x in ratios)});"
      f" sealed {statistics.median(s['requests_per_sec'] for s in sealed):,.0f} req/s"
      f" ({statistics.median(mib(s) for s in sealed):,.0f} MiB/s),"
      f" plain {statistics.median(p['requests_per_sec'] for p in plain):,.0f} req/s"
      f" ({statistics.median(mib(p) for p in plain):,.0f} MiB/s)")
PY
done
