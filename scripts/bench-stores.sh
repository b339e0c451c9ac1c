#!/usr/bin/env bash
# Handshakes/s and warm sealed requests/s with each session store, measured in one run:
# one `sessioncert serve` per store (in-memory, SQLite, Redis, PostgreSQL), all started
# at once, then ROUNDS rounds that run each benchmark against each server in turn; the
# median of each is printed with its ratio to the in-memory store's.
#
#   scripts/bench-stores.sh                      # 5 rounds of 2 s, 16 workers, 1 KiB bodies
#   ROUNDS=3 DURATION=3s CONCURRENCY=32 scripts/bench-stores.sh
#   STORES="memory redis" scripts/bench-stores.sh
#
# Redis and PostgreSQL must answer on 127.0.0.1:6379 and :5432 (database `test`); each
# run uses its own Redis prefix and PostgreSQL schema and removes them afterwards.
# Client, servers, Redis and PostgreSQL share this machine's cores: compare the ratios.
# Each request run also reports the CPU time per request of the server, of the store's
# own processes (redis-server, postgres) and of the load generator, read from /proc:
# where the time of a warm request goes with each store.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-2s}
CONCURRENCY=${CONCURRENCY:-16}
BODY=${BODY:-1024}
STORES=${STORES:-"memory sqlite redis postgres"}
cargo build --release --quiet --bin sessioncert
BIN=$PWD/target/release/sessioncert
WORK=$(mktemp -d)
TAG="bench$$"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
store_url() {
  case $1 in
    memory) echo "memory:" ;;
    sqlite) echo "sqlite:$WORK/sessions.db" ;;
    redis) echo "redis://127.0.0.1:6379/?prefix=$TAG" ;;
    postgres) echo "postgres://postgres@127.0.0.1:5432/test?schema=$TAG" ;;
  esac
}
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -h 127.0.0.1 --scan --pattern "$TAG:*" 2>/dev/null | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -d test -qc "drop schema if exists \"$TAG\" cascade" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN" keygen --out "$WORK/id" >/dev/null
PIN=$("$BIN" fingerprint --data "$WORK/id")
declare -A URL SPID
for s in $STORES; do
  port=$(free_port)
  # Access lines off: they cost the same with every store and would only blur the ratio.
  RUST_LOG=${RUST_LOG:-info,sessioncert::access=off} "$BIN" serve --addr "127.0.0.1:$port" \
    --data "$WORK/id" --store "$(store_url "$s")" >"$WORK/$s.log" 2>&1 &
  PIDS+=($!)
  SPID[$s]=$!
  URL[$s]="http://127.0.0.1:$port"
done
for s in $STORES; do
  for _ in $(seq 100); do curl -fs "${URL[$s]}/healthz" >/dev/null && break; sleep 0.1; done
  curl -fs "${URL[$s]}/healthz" >/dev/null || { echo "FAIL: the $s server did not start:"; tail -5 "$WORK/$s.log"; exit 1; }
done
OUT="$WORK/runs.jsonl"
TICK=$(getconf CLK_TCK)
# CPU ticks (user + system) of the given processes, summed; gone ones count 0.
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0; done | awk '{s += $1} END {print s + 0}'; }
store_pids() {
  case $1 in
    redis) pgrep -x redis-server || true ;;
    postgres) pgrep -x postgres || pgrep -f '^postgres' || true ;;
  esac
}
for r in $(seq "$ROUNDS"); do
  for s in $STORES; do
    h=$("$BIN" bench handshake --url "${URL[$s]}" --pin "$PIN" --duration "$DURATION" \
      --concurrency "$CONCURRENCY" --json --progress 0s)
    spids=$(store_pids "$s")
    s0=$(ticks "${SPID[$s]}"); d0=$(ticks $spids)
    q=$(/usr/bin/time -f '%U %S' -o "$WORK/client.time" "$BIN" bench request \
      --url "${URL[$s]}/apiTest" --pin "$PIN" --duration "$DURATION" \
      --concurrency "$CONCURRENCY" --body "$BODY" --json --progress 0s)
    s1=$(ticks "${SPID[$s]}"); d1=$(ticks $spids)
    c=$(awk '{print $1 + $2}' "$WORK/client.time")
    cpu=$(printf '{"server_s":%s,"store_s":%s,"client_s":%s}' \
      "$(awk "BEGIN {print ($s1 - $s0) / $TICK}")" "$(awk "BEGIN {print ($d1 - $d0) / $TICK}")" "$c")
    printf '{"store":"%s","round":%s,"handshake":%s,"request":%s,"cpu":%s}\n' "$s" "$r" "$h" "$q" "$cpu" >>"$OUT"
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in runs:
    for kind in ("handshake", "request"):
        assert r[kind]["errors"] == 0, (r["store"], kind, r[kind])
    by.setdefault(r["store"], []).append(r)
med = lambda rs, k, f: statistics.median(x[k][f] for x in rs)
base = by.get("memory")
for store, rs in by.items():
    h = med(rs, "handshake", "handshakes_per_sec")
    q = med(rs, "request", "requests_per_sec")
    line = (f"{store:>9}: {h:>8,.0f} handshakes/s, {q:>8,.0f} warm requests/s"
            f" (p50 {med(rs, 'request', 'p50_ms'):.3f} ms, p99 {med(rs, 'request', 'p99_ms'):.3f} ms)")
    if base and store != "memory":
        line += (f"; vs in-memory: handshakes {h / med(base, 'handshake', 'handshakes_per_sec'):.2f}x,"
                 f" requests {q / med(base, 'request', 'requests_per_sec'):.2f}x")
    print(line)
    us = lambda f: statistics.median(x["cpu"][f] / x["request"]["count"] * 1e6 for x in rs)
    print(f"{'':>11}CPU per warm request: server {us('server_s'):.0f} µs, store processes "
          f"{us('store_s'):.0f} µs, load generator {us('client_s'):.0f} µs")
PY
