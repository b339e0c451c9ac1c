#!/usr/bin/env bash
# The gateway's cost, measured in one run: clients talking to a plain upstream directly
# against clients talking sealed to the same upstream through `sessioncert gateway`.
#
# The upstream is `sessioncert serve`'s plain echo (POST /plain/apiTest answers the body
# back, so N bytes go each way); the gateway forwards /plain/apiTest to it. For each body
# size, `bench request --plain` straight to the upstream and `bench request --pin` through
# the gateway alternate in PAIRS pairs; the medians of requests/s, p50 and p99 of each,
# their ratio and the latency the gateway adds are printed.
#
#   scripts/bench-gateway.sh                       # 1 KiB and 64 KiB, 5 pairs of 3 s
#   SIZES=1024 PAIRS=3 CONCURRENCY=8 scripts/bench-gateway.sh
#   FULL=1 scripts/bench-gateway.sh                # sealed in full-request mode
#
# Load generator, gateway and upstream share this machine's cores; compare the ratios
# measured in one run, not absolute rates across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"1024 65536"}
PAIRS=${PAIRS:-5}
DURATION=${DURATION:-3s}
CONCURRENCY=${CONCURRENCY:-16}
FULL_FLAG=(); [ -n "${FULL:-}" ] && FULL_FLAG=(--full)
cargo build --release --quiet --bin sessioncert
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/sessioncert
TMP=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
U=$(free_port) G=$(free_port)
# Access lines off on both: they cost the same per request and would only blur the ratio.
export RUST_LOG=${RUST_LOG:-info,sessioncert::access=off}
"$BIN" serve --addr "127.0.0.1:$U" --data "$TMP/upstream" --memory --max-body 4MiB \
  >"$TMP/upstream.log" 2>&1 & UP=$!
"$BIN" gateway --upstream "http://127.0.0.1:$U" --addr "127.0.0.1:$G" --data "$TMP/gateway" \
  --memory --max-body 4MiB >"$TMP/gateway.log" 2>&1 & GW=$!
trap 'kill $GW $UP 2>/dev/null; wait $GW $UP 2>/dev/null || true; rm -rf "$TMP"' EXIT
for p in "$U" "$G"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
PIN=$("$BIN" fingerprint --data "$TMP/gateway")
echo "load: $(uptime | sed 's/.*load average/load average/'); concurrency $CONCURRENCY, $PAIRS pairs of $DURATION"

for size in $SIZES; do
  runs=()
  for _ in $(seq "$PAIRS"); do
    d=$("$BIN" bench request --plain --url "http://127.0.0.1:$U/plain/apiTest" \
      --duration "$DURATION" --concurrency "$CONCURRENCY" --body "$size" --json --progress 0s)
    g=$("$BIN" bench request --pin "$PIN" "${FULL_FLAG[@]}" --url "http://127.0.0.1:$G/plain/apiTest" \
      --duration "$DURATION" --concurrency "$CONCURRENCY" --body "$size" --json --progress 0s)
    runs+=("$d" "$g")
  done
  python3 - "$size" "${runs[@]}" <<'PY'
import json, statistics, sys
size, runs = int(sys.argv[1]), [json.loads(x) for x in sys.argv[2:]]
direct, gw = runs[0::2], runs[1::2]
for r in runs:
    assert r["errors"] == 0, r
med = lambda rs, k: statistics.median(r[k] for r in rs)
ratios = [g["requests_per_sec"] / d["requests_per_sec"] for d, g in zip(direct, gw)]
print(f"{size:>6} B: gateway/direct {statistics.median(ratios):.2f} (pairs {' '.join(f'{x:.2f}' for x in ratios)});"
      f" direct {med(direct, 'requests_per_sec'):,.0f} req/s p50 {med(direct, 'p50_ms'):.3f} ms p99 {med(direct, 'p99_ms'):.3f} ms;"
      f" gateway {med(gw, 'requests_per_sec'):,.0f} req/s p50 {med(gw, 'p50_ms'):.3f} ms p99 {med(gw, 'p99_ms'):.3f} ms;"
      f" added p50 {med(gw, 'p50_ms') - med(direct, 'p50_ms'):+.3f} ms, p99 {med(gw, 'p99_ms') - med(direct, 'p99_ms'):+.3f} ms")
PY
done
