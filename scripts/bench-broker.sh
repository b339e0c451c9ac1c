#!/usr/bin/env bash
# The key broker's speed, in one run on this machine, against one `broker serve` on
# 127.0.0.1 (SQLite, objects in a scratch directory, mail as .eml files):
#   1. a SIZE file (default 1 GiB, random) uploaded and downloaded through the channel
#      with the CLI, beside a plain `cp` of the same file in the same run; the server's
#      peak resident memory (VmHWM) after each transfer;
#   2. logins, uploads of 1 KiB and share creations per second (examples/broker_load:
#      CLIENTS logged-in clients in one process for DURATION seconds each), beside a sealed
#      `GET /broker/v1/files` on the same sessions as the baseline.
# Client and server share this machine's cores: compare ratios within a run.
#
#   scripts/bench-broker.sh           (SIZE=1G DURATION=5 CLIENTS=4 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1G}
SECONDS_EACH=${DURATION:-5}
CLIENTS=${CLIENTS:-4}
cargo build --release --quiet --bin sessioncert
cargo build --release --quiet -p sessioncert-broker-server --example broker_load
BIN=$PWD/target/release/sessioncert
LOAD=$PWD/target/release/examples/broker_load
# The per-user quotas and share/mail budgets are raised: the load is one user sharing
# thousands of times a second, which the defaults refuse by design.
# On disk, not tmpfs: the server streams to a file as a real deployment does.
WORK=$(mktemp -d -p "${BENCH_DIR:-$PWD/target}" bench-broker.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" broker tenant create acme --data "$WORK/data" >/dev/null
"$BIN" broker serve --addr "127.0.0.1:$PORT" --data "$WORK/data" --outbox "$WORK/outbox" \
  --max-stream-body none --max-bytes-per-user 1000GiB --max-files-per-user 100000000 \
  --max-open-shares 100000000 --shares-per-minute 100000000 --mails-per-hour 1000000000 \
  >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
PIN=$("$BIN" fingerprint --data "$WORK/data")
URL="http://127.0.0.1:$PORT"
hwm() { awk '/VmHWM/{printf "%.1f MiB", $2/1024}' "/proc/$SERVER/status"; }
mbps() { python3 -c "import sys; b=int(sys.argv[1]); t=float(sys.argv[2]); print(f'{b/t/1048576:.0f} MiB/s')" "$1" "$2"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$1" "$2"; }

printf 'bench password' >"$WORK/pw"
"$BIN" broker register --url "$URL" --pin "$PIN" --tenant acme --email bench@example.test \
  --password-file "$WORK/pw" --profile "$WORK/p" >/dev/null 2>&1
sleep 1
CODE=$(grep -h 'Verification code:' "$WORK"/outbox/*.eml | tail -1 | cut -d' ' -f3)
"$BIN" broker verify --profile "$WORK/p" --code "$CODE" >/dev/null
"$BIN" broker login --profile "$WORK/p" --password-file "$WORK/pw" 2>/dev/null
echo "== server after start and login: peak RSS $(hwm)"

echo "== $SIZE file: cp, upload, download"
head -c "$SIZE" /dev/urandom >"$WORK/big"
BYTES=$(stat -c %s "$WORK/big")
sync
t0=$(now); cp "$WORK/big" "$WORK/big.cp"; sync; t1=$(now)
CP=$(since "$t0" "$t1"); rm -f "$WORK/big.cp"
t0=$(now); ID=$("$BIN" broker upload --profile "$WORK/p" "$WORK/big" 2>/dev/null | tail -1); sync; t1=$(now)
UP=$(since "$t0" "$t1")
echo "  upload done: server peak RSS $(hwm)"
t0=$(now); "$BIN" broker download --profile "$WORK/p" "$ID" -o "$WORK/back" 2>/dev/null; sync; t1=$(now)
DOWN=$(since "$t0" "$t1")
echo "  download done: server peak RSS $(hwm)"
cmp -s "$WORK/big" "$WORK/back" || { echo "FAIL: the downloaded file differs"; exit 1; }
rm -f "$WORK/back"
python3 - "$BYTES" "$CP" "$UP" "$DOWN" <<'EOF'
import sys
b, cp, up, down = int(sys.argv[1]), *map(float, sys.argv[2:])
mb = lambda t: b / t / 1048576
print(f"  cp        {cp:6.2f} s  {mb(cp):6.0f} MiB/s")
print(f"  upload    {up:6.2f} s  {mb(up):6.0f} MiB/s  = {cp/up:.2f}x cp")
print(f"  download  {down:6.2f} s  {mb(down):6.0f} MiB/s  = {cp/down:.2f}x cp")
EOF
echo "  server peak RSS over both transfers: $(hwm)"
rm -f "$WORK/big"

echo "== operations per second ($CLIENTS clients, ${SECONDS_EACH}s each)"
for op in sealed-echo login upload-1k share; do
  "$LOAD" "$URL" "$PIN" acme "$WORK/outbox" "$op" "$SECONDS_EACH" "$CLIENTS" | sed 's/^/  /'
done
echo "  server peak RSS at the end: $(hwm)"
