// The original Session-Cert prototype's client (formegusto/Session-Cert, session-cert-fe),
// step by step as it shipped: its Math.random key string, Node's crypto.publicEncrypt
// (the prototype used crypto-browserify's, which has the same OAEP/SHA-1 default) and
// the npm crypto-js package, against a real `sessioncert serve --legacy-session-cert`.
// Run: `npm ci && node --test` in this folder, after `cargo build --release` at the
// repository root (or set SESSIONCERT_BIN).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { publicEncrypt } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import CryptoJS from "crypto-js";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../..");
const BIN =
  process.env.SESSIONCERT_BIN ||
  join(process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target"), "release", "sessioncert");

const dirs = [];
const children = new Set();

/** Starts `sessioncert serve` (SQLite in `data`); resolves with its URL once it serves. */
async function startServer(data, extra = []) {
  const child = spawn(BIN, ["serve", "--addr", "127.0.0.1:0", "--data", data, ...extra], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SESSIONCERT_"))), NO_COLOR: "1", RUST_LOG: "warn" },
  });
  children.add(child);
  let log = "";
  const addr = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("server did not start:\n" + log)), 20000);
    child.stderr.on("data", (b) => {
      log += b;
      const m = /sessioncert serving.* addr=(\S+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.on("exit", (code) => fail(new Error(`server exited (${code}):\n${log}`)));
  });
  return { child, url: `http://${addr}`, log: () => log };
}

async function stopServer(s) {
  const exited = new Promise((ok) => s.child.on("exit", ok));
  s.child.kill("SIGTERM");
  await exited;
  children.delete(s.child);
}

function newDataDir() {
  const dir = mkdtempSync(join(tmpdir(), "sessioncert-legacy-"));
  dirs.push(dir);
  return join(dir, "data");
}

// ------------------------------------------------------------------ the original client

/** The prototype's getRandomBytes: 32 characters from Math.random, codes 33..127. */
function getRandomBytes(length) {
  let s = "";
  for (let i = 0; i < length; i++) s += String.fromCharCode(Math.floor(Math.random() * (128 - 33) + 33));
  return s;
}

/** GET /publicKey, POST /symmetricKey, decrypt + re-encrypt, PATCH /establish. */
async function establish(base) {
  let r = await fetch(`${base}/sessionCert/publicKey`);
  assert.equal(r.status, 200);
  const { sessionCert } = await r.json();
  assert.equal(typeof sessionCert.id, "number");
  assert.ok(Number.isSafeInteger(sessionCert.id) && sessionCert.id > 0);
  assert.match(sessionCert.publicKey, /^-----BEGIN PUBLIC KEY-----\n/);
  const symmetricKey = getRandomBytes(32);
  const encSymmetricKey = publicEncrypt(sessionCert.publicKey, Buffer.from(symmetricKey)).toString("base64");
  r = await fetch(`${base}/sessionCert/symmetricKey`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: sessionCert.id, symmetricKey: encSymmetricKey }),
  });
  assert.equal(r.status, 201);
  const encBody = await r.text();
  const decBody = JSON.parse(CryptoJS.AES.decrypt(encBody, symmetricKey).toString(CryptoJS.enc.Utf8));
  assert.equal(typeof decBody.testString, "string");
  assert.equal(decBody.testString.length, 32);
  const reEncrypted = CryptoJS.AES.encrypt(JSON.stringify(decBody), symmetricKey).toString();
  r = await fetch(`${base}/sessionCert/establish`, {
    method: "PATCH",
    headers: { "content-type": "text/plain", "session-cert-id": String(sessionCert.id) },
    body: reEncrypted,
  });
  assert.equal(r.status, 200);
  const done = await r.json();
  assert.equal(done.status, true);
  return { id: sessionCert.id, key: symmetricKey, encBody, reEncrypted };
}

/** The demo's POST /apiTest: encrypt the text, send it, decrypt the answer. */
async function apiTest(base, cert, body, id = cert.id) {
  const r = await fetch(`${base}/apiTest`, {
    method: "POST",
    headers: { "content-type": "text/plain", "session-cert-id": String(id) },
    body,
  });
  return { status: r.status, text: await r.text(), type: r.headers.get("content-type") };
}

const enc = (cert, text) => CryptoJS.AES.encrypt(text, cert.key).toString();
const dec = (cert, text) => JSON.parse(CryptoJS.AES.decrypt(text, cert.key).toString(CryptoJS.enc.Utf8));

// ------------------------------------------------------------------ tests

let server;
let data;

before(async () => {
  assert.ok(existsSync(BIN), `no sessioncert binary at ${BIN}: run \`cargo build --release\` first (or set SESSIONCERT_BIN)`);
  data = newDataDir();
  server = await startServer(data, ["--legacy-session-cert"]);
});

after(async () => {
  for (const c of children) c.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test("the original client establishes and its protected request is answered as the seed's was", async () => {
  const cert = await establish(server.url);
  const sent = "보낼 데이터 {\"a\": 1}";
  const r = await apiTest(server.url, cert, enc(cert, sent));
  assert.equal(r.status, 200);
  assert.match(r.type, /^text\/plain/);
  // What the prototype's decryptText does with the answer.
  const answer = dec(cert, r.text);
  assert.deepEqual(answer, { status: true, message: "보내오신 데이터를 확인해주세요.", requestData: sent });
  assert.deepEqual(Object.keys(answer), ["status", "message", "requestData"]);
  // The answer is a CryptoJS ciphertext, not the plaintext.
  assert.ok(!r.text.includes("requestData"));
  assert.ok(r.text.startsWith("U2FsdGVkX1"));
});

test("a replayed, tampered or reflected request is refused with one uniform answer and never runs", async () => {
  const cert = await establish(server.url);
  const body = enc(cert, "transfer 100");
  const first = await apiTest(server.url, cert, body);
  assert.equal(first.status, 200);
  const refusal = { status: 403, body: { status: false, message: "session cert refused" } };
  const expectRefused = (r, what) => {
    assert.equal(r.status, refusal.status, what);
    assert.deepEqual(JSON.parse(r.text), refusal.body, what);
  };
  expectRefused(await apiTest(server.url, cert, body), "replayed request");
  // The server's own answer sent back as a request.
  expectRefused(await apiTest(server.url, cert, first.text), "reflected response");
  // Tampered: a bit flipped in the last block (bad padding) and in the first (garbled
  // plaintext, padding intact) look the same from outside.
  const raw = Buffer.from(enc(cert, "0123456789abcdef0123456789abcdef"), "base64");
  const lastBlock = Buffer.from(raw);
  lastBlock[lastBlock.length - 1] ^= 1;
  const firstBlock = Buffer.from(raw);
  firstBlock[16] ^= 1;
  expectRefused(await apiTest(server.url, cert, lastBlock.toString("base64")), "bad padding");
  const garbled = await apiTest(server.url, cert, firstBlock.toString("base64"));
  // A flipped salt byte gives another key: the padding almost surely fails; when it
  // does not, the plaintext is garbage that is rarely UTF-8. Either way not our text.
  if (garbled.status === 200) assert.notEqual(dec(cert, garbled.text).requestData, "0123456789abcdef0123456789abcdef");
  else expectRefused(garbled, "flipped salt");
  // The test-string messages of the handshake, as requests.
  expectRefused(await apiTest(server.url, cert, cert.encBody), "the server's test string message");
  expectRefused(await apiTest(server.url, cert, cert.reEncrypted), "the establish body");
  // A fresh request still works: the session was not harmed.
  const again = await apiTest(server.url, cert, enc(cert, "still here"));
  assert.equal(again.status, 200);
  assert.equal(dec(cert, again.text).requestData, "still here");
});

test("establish refuses a replay, a wrong key, an unknown id and a malformed id", async () => {
  const cert = await establish(server.url);
  const patch = (id, body) =>
    fetch(`${server.url}/sessionCert/establish`, {
      method: "PATCH",
      headers: { "content-type": "text/plain", "session-cert-id": String(id) },
      body,
    });
  // Replayed establish of an established session.
  let r = await patch(cert.id, cert.reEncrypted);
  assert.equal(r.status, 403);
  assert.equal((await r.json()).status, false);
  // Unknown id.
  r = await patch(cert.id === 1 ? 2 : cert.id - 1, cert.reEncrypted);
  assert.equal(r.status, 403);
  // Not an id: refused before anything else, and said so.
  r = await patch("12abc", cert.reEncrypted);
  assert.equal(r.status, 400);
  // A pending session: the wrong key's answer uses up an attempt; the right one still works.
  const pk = await (await fetch(`${server.url}/sessionCert/publicKey`)).json();
  const key = getRandomBytes(32);
  r = await fetch(`${server.url}/sessionCert/symmetricKey`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: pk.sessionCert.id, symmetricKey: publicEncrypt(pk.sessionCert.publicKey, Buffer.from(key)).toString("base64") }),
  });
  assert.equal(r.status, 201);
  const encBody = await r.text();
  const testString = JSON.parse(CryptoJS.AES.decrypt(encBody, key).toString(CryptoJS.enc.Utf8)).testString;
  const wrong = CryptoJS.AES.encrypt(JSON.stringify({ testString }), getRandomBytes(32)).toString();
  r = await patch(pk.sessionCert.id, wrong);
  assert.equal(r.status, 403);
  const badJson = CryptoJS.AES.encrypt("not json", key).toString();
  r = await patch(pk.sessionCert.id, badJson);
  assert.equal(r.status, 403, "bad JSON looks like a bad key");
  r = await patch(pk.sessionCert.id, CryptoJS.AES.encrypt(JSON.stringify({ testString }), key).toString());
  assert.equal(r.status, 200);
  // A second key for a taken id is refused (the original replaced the key).
  r = await fetch(`${server.url}/sessionCert/symmetricKey`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: pk.sessionCert.id, symmetricKey: publicEncrypt(pk.sessionCert.publicKey, Buffer.from(getRandomBytes(32))).toString("base64") }),
  });
  assert.equal(r.status, 403);
});

test("protected requests with a wrong or unknown id are refused", async () => {
  const a = await establish(server.url);
  const b = await establish(server.url);
  // a's request sent under b's id: b's key does not open it.
  let r = await apiTest(server.url, b, enc(a, "for a"), b.id);
  assert.equal(r.status, 403);
  r = await apiTest(server.url, a, enc(a, "x"), 424242);
  assert.equal(r.status, 403);
  r = await apiTest(server.url, a, enc(a, "x"), "-1");
  assert.equal(r.status, 400);
  // Without the header the route takes only sealed (modern) requests.
  r = await fetch(`${server.url}/apiTest`, { method: "POST", headers: { "content-type": "text/plain" }, body: enc(a, "x") });
  assert.equal(r.status, 400);
});

test("legacy sessions are listed, counted in metrics, and survive a clean restart with replays still refused", async () => {
  const cert = await establish(server.url);
  const body = enc(cert, "before restart");
  assert.equal((await apiTest(server.url, cert, body)).status, 200);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /sessioncert_legacy_messages_total\{outcome="opened"\} [1-9]/);
  assert.match(metrics, /sessioncert_legacy_handshakes_total\{outcome="established"\} [1-9]/);
  await stopServer(server);
  const listed = execFileSync(BIN, ["sessions", "list", "--data", data], { encoding: "utf8" });
  assert.match(listed, new RegExp(`legacy:${cert.id} +ESTABLISHED +session-cert-legacy`));
  const rows = JSON.parse(execFileSync(BIN, ["sessions", "list", "--json", "--data", data], { encoding: "utf8" }));
  const row = rows.find((r) => r.id === `legacy:${cert.id}`);
  assert.ok(row, "sessions list --json names it legacy:N");
  assert.equal(row.suite, "session-cert-legacy");
  assert.equal(row.request_count, 1);
  server = await startServer(data, ["--legacy-session-cert"]);
  assert.equal((await apiTest(server.url, cert, body)).status, 403, "replay after restart");
  const r = await apiTest(server.url, cert, enc(cert, "after restart"));
  assert.equal(r.status, 200);
  assert.equal(dec(cert, r.text).requestData, "after restart");
  // An operator closes it by the id the client knows.
  execFileSync(BIN, ["sessions", "close", `legacy:${cert.id}`, "--data", data], { encoding: "utf8" });
  let closed = false;
  for (let i = 0; i < 40 && !closed; i++) {
    await new Promise((ok) => setTimeout(ok, 100));
    closed = (await apiTest(server.url, cert, enc(cert, "after close"))).status === 403;
  }
  assert.ok(closed, "closed session still served");
});

test("without --legacy-session-cert the legacy routes do not exist", async () => {
  const other = await startServer(newDataDir());
  try {
    // Refused like any plain request to the sealed routes (no key, no id handed out).
    const r = await fetch(`${other.url}/sessionCert/publicKey`);
    assert.equal(r.status, 400);
    assert.ok(!(await r.text()).includes("publicKey"));
  } finally {
    await stopServer(other);
  }
});
