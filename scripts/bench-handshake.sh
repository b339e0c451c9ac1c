#!/usr/bin/env bash
# Handshakes/s of sessioncert against a lean one-round-trip Noise NK server, in one run on
# 127.0.0.1 (issue 11: "handshakes/s reach >= 0.8x a lean one-round-trip Noise NK server").
#
#   scripts/bench-handshake.sh            # C = 4 and 8, three alternating pairs of 5 s each
#   DURATION=5s CONCURRENCY="4 8" PAIRS=3 scripts/bench-handshake.sh
#   NO_BUILD=1 scripts/bench-handshake.sh # use the release binaries already in target/
#
# Both servers run at once (release `sessioncert serve --memory`, `lean-noise-nk serve`);
# for each concurrency C the two load generators alternate, `sessioncert bench handshake`
# then `lean-noise-nk bench`, PAIRS times, and the median of the per-pair ratios
# sessioncert/lean is printed. Both sides do one HTTP/1.1 round trip per handshake with
# the same Noise NK pattern, the same X25519 (sessioncert's snow resolver on aws-lc-rs),
# the same HTTP client settings (reqwest) and the same allocator; the lean side has no
# key configuration, ticket, session id, suite negotiation or limits. Loopback clients are
# exempt from sessioncert's per-address handshake limits by default (no --limit-loopback).
# Client and server share this machine's cores, and anything else running (a compiler)
# moves the absolute rates: compare the ratios of pairs from the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONCURRENCY=${CONCURRENCY:-"4 8"}
PAIRS=${PAIRS:-3}
WARMUP=${WARMUP:-1s}
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --quiet -p sessioncert-cli -p sessioncert-bench-lean
fi
SC=$PWD/target/release/sessioncert
LEAN=$PWD/target/release/lean-noise-nk
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

DATA=$(mktemp -d)
SC_PORT=$(free_port)
"$SC" serve --memory --addr "127.0.0.1:$SC_PORT" --data "$DATA" >"$DATA/serve.log" 2>&1 &
SC_PID=$!
LEAN_PORT=$(free_port)
"$LEAN" serve --addr "127.0.0.1:$LEAN_PORT" >"$DATA/lean.log" 2>&1 &
LEAN_PID=$!
trap 'kill $SC_PID $LEAN_PID 2>/dev/null; wait $SC_PID $LEAN_PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$SC_PORT/healthz" >/dev/null && curl -fs "http://127.0.0.1:$LEAN_PORT/nk" >/dev/null && break
  sleep 0.1
done
PIN=$("$SC" fingerprint --data "$DATA")
SC_URL=http://127.0.0.1:$SC_PORT
LEAN_URL=http://127.0.0.1:$LEAN_PORT

SECONDS=0
echo "== handshakes/s: sessioncert (one round trip, hello -> server hello with ticket) vs lean Noise NK"
echo "   ($DURATION per run, $PAIRS alternating pairs per concurrency; load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
# Warm both servers and clients up once (connections, allocator, caches); not counted.
"$SC" bench handshake --url "$SC_URL" --pin "$PIN" --duration "$WARMUP" --concurrency 4 --json >/dev/null
"$LEAN" bench --url "$LEAN_URL" --duration "$WARMUP" --concurrency 4 --json >/dev/null

RESULTS=()
for C in $CONCURRENCY; do
  for i in $(seq "$PAIRS"); do
    S=$("$SC" bench handshake --url "$SC_URL" --pin "$PIN" --duration "$DURATION" --concurrency "$C" --json)
    L=$("$LEAN" bench --url "$LEAN_URL" --duration "$DURATION" --concurrency "$C" --json)
    RESULTS+=("$S" "$L")
    python3 - "$C" "$i" "$S" "$L" <<'PY'
import json, sys
c, i, s, l = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
f = lambda r: f"{r['handshakes_per_sec']:,.0f}/s (p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']})"
print(f"  c={c} pair {i}: sessioncert {f(s)}  lean {f(l)}  ratio {s['handshakes_per_sec']/l['handshakes_per_sec']:.2f}")
PY
  done
done
python3 - "${RESULTS[@]}" <<'PY'
import json, statistics, sys
rs = [json.loads(a) for a in sys.argv[1:]]
by_c = {}
for s, l in zip(rs[0::2], rs[1::2]):
    by_c.setdefault(s["concurrency"], []).append((s, l))
for c, pairs in by_c.items():
    ratios = [s["handshakes_per_sec"] / l["handshakes_per_sec"] for s, l in pairs]
    sm = statistics.median(s["handshakes_per_sec"] for s, _ in pairs)
    lm = statistics.median(l["handshakes_per_sec"] for _, l in pairs)
    errors = sum(s["errors"] + l["errors"] for s, l in pairs)
    print(f"  c={c}: median ratio sessioncert/lean {statistics.median(ratios):.2f}"
          f" (pairs {' '.join(f'{r:.2f}' for r in ratios)}; median rates {sm:,.0f}/s vs {lm:,.0f}/s; errors {errors})")
PY
echo "   (load average after: $(cut -d' ' -f1-3 /proc/loadavg); ${SECONDS} s without the build)"
