#!/usr/bin/env bash
# Runs the commands the README shows, exactly as written, and checks what they print.
# Each command is first looked up verbatim in README.md, so a README edit that changes a
# command without changing this script fails here (update both together).
#
#   scripts/readme-check.sh        (from the repository root; CI runs it)
#
# Uses 127.0.0.1:8080 and 127.0.0.1:3000 as the README does; a scratch HOME and install
# root keep it off the caller's ~/.cargo/bin and ~/.local.
set -euo pipefail
cd "$(dirname "$0")/.."
README=README.md
fail() { echo "readme-check FAIL: $*" >&2; exit 1; }
shown() { grep -qF -- "$1" "$README" || fail "the README no longer shows: $1"; }

SCRATCH=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$SCRATCH" ./sessioncert-data ./example-data
  [ -z "${MADE_BIG:-}" ] || rm -f ./big.iso ./copy.iso
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 1500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}
for p in 8080 3000; do port_free "$p" || fail "port $p is busy; the README's commands need it"; done
for d in ./sessioncert-data ./example-data ./big.iso ./copy.iso; do [ ! -e "$d" ] || fail "$d exists; the README's commands would reuse it"; done

echo "== building first, so the waits below time the commands, not the compiler"
cargo build --release --locked -q
cargo build --locked -q -p sessioncert-examples

echo "== Two commands: the demo server, then a sealed request from a second terminal"
shown 'cargo run --release -- serve        # demo server on 127.0.0.1:8080'
cargo run --release --locked -q -- serve >"$SCRATCH/serve.log" 2>&1 &
PIDS+=($!)
wait_port 8080 || fail "serve did not listen on 8080: $(cat "$SCRATCH/serve.log")"
grep -q 'pin=ed25519:' "$SCRATCH/serve.log" || fail "serve did not print its pin"
shown 'PIN=$(cargo run -q --release -- fingerprint)           # reads ./sessioncert-data'
shown "cargo run -q --release -- request --pin \"\$PIN\" \\"
shown "  -H 'content-type: application/json' -d '{\"secret\":\"hello\"}' http://127.0.0.1:8080/apiTest"
PIN=$(cargo run -q --release -- fingerprint)
OUT=$(cargo run -q --release -- request --pin "$PIN" \
  -H 'content-type: application/json' -d '{"secret":"hello"}' http://127.0.0.1:8080/apiTest)
EXPECTED='{"message":"apiTest: request received","requestData":{"secret":"hello"},"status":true}'
shown "# $EXPECTED"
[ "$OUT" = "$EXPECTED" ] || fail "the quick start printed $OUT, the README says $EXPECTED"
shown 'POST /plain/apiTest'
code=$(python3 -c '
import urllib.request, urllib.error
try:
    urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8080/apiTest", data=b"{}"))
    print(200)
except urllib.error.HTTPError as e:
    print(e.code)')
[ "$code" = 400 ] || fail "a plain request to /apiTest got $code, the README says 400"

echo "== Two commands, streams: a file up and down, events one by one"
shown 'cargo run -q --release -- request --pin "$PIN" -X PUT --data-binary @big.iso http://127.0.0.1:8080/files/big.iso'
shown 'cargo run -q --release -- request --pin "$PIN" -o copy.iso http://127.0.0.1:8080/files/big.iso'
shown "cargo run -q --release -- request --pin \"\$PIN\" 'http://127.0.0.1:8080/events?n=5&interval_ms=300'"
MADE_BIG=1
head -c 12000000 /dev/urandom > big.iso
SUM=$(sha256sum big.iso | cut -d' ' -f1)
OUT=$(cargo run -q --release -- request --pin "$PIN" -X PUT --data-binary @big.iso http://127.0.0.1:8080/files/big.iso)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["sha256"] == sys.argv[2] and d["bytes"] == 12000000, d' "$OUT" "$SUM" \
  || fail "the upload answered $OUT, not the file's SHA-256 $SUM"
cargo run -q --release -- request --pin "$PIN" -o copy.iso http://127.0.0.1:8080/files/big.iso
cmp -s big.iso copy.iso || fail "the downloaded copy.iso differs from big.iso"
EVENTS=$(cargo run -q --release -- request --pin "$PIN" 'http://127.0.0.1:8080/events?n=5&interval_ms=300')
shown '# data: {"i":0}'
[ "$(grep -c '^data: {"i":[0-4]}$' <<<"$EVENTS")" = 5 ] || fail "the events printed were: $EVENTS"
rm -f big.iso copy.iso

kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

echo "== Migrating from Session-Cert: the demo server with the legacy routes beside"
shown 'cargo run --release -- serve --legacy-session-cert'
cargo run --release --locked -q -- serve --legacy-session-cert >"$SCRATCH/legacy.log" 2>&1 &
PIDS+=($!)
wait_port 8080 || fail "serve --legacy-session-cert did not listen on 8080: $(cat "$SCRATCH/legacy.log")"
python3 - <<'PY' || fail "GET /sessionCert/publicKey did not answer as the prototype's"
import json, urllib.request
v = json.load(urllib.request.urlopen("http://127.0.0.1:8080/sessionCert/publicKey"))
c = v["sessionCert"]
assert isinstance(c["id"], int) and 0 < c["id"] < 2**53, c
assert c["publicKey"].startswith("-----BEGIN PUBLIC KEY-----\n"), c
PY
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

echo "== Install: cargo install, completions, man pages"
shown 'cargo install --path crates/sessioncert-cli      # puts `sessioncert` in ~/.cargo/bin'
shown 'mkdir -p ~/.local/share/bash-completion/completions'
shown 'sessioncert completions bash > ~/.local/share/bash-completion/completions/sessioncert'
shown 'sessioncert man --out ~/.local/share/man/man1    # sessioncert.1, sessioncert-serve.1, …'
# The install root and HOME are scratch; the build reuses this checkout's target dir.
# (A subshell on the left of `||` runs without `set -e`, so each step is checked.)
(
  export CARGO_INSTALL_ROOT="$SCRATCH/root" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
  export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" HOME="$SCRATCH/home"
  export PATH="$CARGO_INSTALL_ROOT/bin:$PATH"
  cargo install -q --locked --path crates/sessioncert-cli &&
  mkdir -p ~/.local/share/bash-completion/completions &&
  sessioncert completions bash > ~/.local/share/bash-completion/completions/sessioncert &&
  sessioncert man --out ~/.local/share/man/man1 >/dev/null &&
  grep -q 'complete' ~/.local/share/bash-completion/completions/sessioncert &&
  [ -s ~/.local/share/man/man1/sessioncert.1 ] && [ -s ~/.local/share/man/man1/sessioncert-serve.1 ]
) || fail "the install commands did not work as shown"

echo "== examples/: the server prints the pin and the client command; the client runs"
shown 'cargo run -p sessioncert-examples --bin server             # prints the pin and the client command'
shown 'cargo run -p sessioncert-examples --bin client -- http://127.0.0.1:3000 ed25519:…'
cargo run -q --locked -p sessioncert-examples --bin server >"$SCRATCH/example.log" 2>&1 &
PIDS+=($!)
wait_port 3000 || fail "the example server did not listen on 3000: $(cat "$SCRATCH/example.log")"
for _ in $(seq 1 50); do grep -q '^try: ' "$SCRATCH/example.log" && break; sleep 0.1; done
TRY=$(sed -n 's/^try: //p' "$SCRATCH/example.log")
case "$TRY" in
  "cargo run -p sessioncert-examples --bin client -- http://127.0.0.1:3000 ed25519:"*) ;;
  *) fail "the example server's hint is not the README's command: $TRY" ;;
esac
bash -c "$TRY" >"$SCRATCH/client.out" 2>&1 || fail "the example client failed: $(cat "$SCRATCH/client.out")"

echo "== Key broker: the README's block, line by line, in this checkout"
for f in ./broker-data ./broker-mail pw.txt alice.profile copy.md bobs-copy.md; do [ ! -e "$f" ] || fail "$f exists; the broker example would reuse it"; done
port_free 8443 || fail "port 8443 is busy; the broker example needs it"
BROKER_BLOCK=$(awk '/^## Key broker/{f=1} f&&/^```sh$/{b=1;next} b&&/^```$/{exit} b' "$README")
[ -n "$BROKER_BLOCK" ] || fail "no shell block under ## Key broker"
BROKER_SCRIPT="$SCRATCH/broker.sh"
{
  echo 'set -euo pipefail'
  # Joined continuation lines, one command each; the backgrounded server is waited for.
  printf '%s\n' "$BROKER_BLOCK" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | while IFS= read -r line; do
    printf '%s\n' "$line"
    case "$line" in
      *"broker serve"*"&"*) echo 'echo $! > "$SCRATCH/broker.pid"; for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break; sleep 0.2; done' ;;
    esac
  done
} > "$BROKER_SCRIPT"
grep -q 'broker open-share' "$BROKER_SCRIPT" || fail "the broker block lost its open-share line"
SCRATCH="$SCRATCH" bash "$BROKER_SCRIPT" >"$SCRATCH/broker.out" 2>&1 || {
  [ -f "$SCRATCH/broker.pid" ] && kill "$(cat "$SCRATCH/broker.pid")" 2>/dev/null
  rm -rf ./broker-data ./broker-mail pw.txt alice.profile alice.profile.session alice.profile.session.lock copy.md bobs-copy.md
  fail "the broker example failed: $(tail -5 "$SCRATCH/broker.out")"
}
BROKER_OK=1
cmp -s README.md copy.md || BROKER_OK=
cmp -s README.md bobs-copy.md || BROKER_OK=
grep -rq 'correct horse' ./broker-data && BROKER_OK=
[ -f "$SCRATCH/broker.pid" ] && kill "$(cat "$SCRATCH/broker.pid")" 2>/dev/null
rm -rf ./broker-data ./broker-mail pw.txt alice.profile alice.profile.session alice.profile.session.lock copy.md bobs-copy.md
[ -n "$BROKER_OK" ] || fail "the broker example's copies differ from README.md, or its data directory holds the password"

echo "readme-check ok: quick start, streams, install, completions, man pages, examples, key broker"
