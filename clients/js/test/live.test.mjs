// Integration: the built bundle (dist/sessioncert.js) against a real `sessioncert serve`
// on 127.0.0.1 (SESSIONCERT_BIN, default ../../target/release/sessioncert).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync } from "node:crypto";
import { execFileSync } from "node:child_process";
import { startServer, BIN } from "./server.mjs";
import { connect, PinMismatch, OutcomeUnknown, SessionCertError } from "../dist/sessioncert.js";

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.stop(); });

const json = (o) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(o) });
const has = (hay, needle) => Buffer.from(hay).includes(Buffer.from(needle));

/** A transport that records what was sent, so a test can replay or forge around it. */
function recordingFetch(hook) {
  const sent = [];
  const f = async (url, init = {}) => {
    const body = init.body instanceof Uint8Array ? init.body : null;
    const entry = { url: String(url), method: init.method ?? "GET", headers: new Headers(init.headers), body };
    if (process.env.DEBUG_SENT) console.log("# sent", entry.method, entry.url);
    sent.push(entry);
    const forged = hook?.(entry);
    if (forged) return forged;
    return fetch(url, init);
  };
  return { f, sent };
}

test("sealed echo round trip; the wire never carries the plaintext", async () => {
  const wire = [];
  const s = await connect(srv.base, { pin: srv.pin, onWire: (e) => wire.push(e) });
  assert.match(s.id, /^[A-Za-z0-9_-]{22}$/);
  assert.equal(s.pin, srv.pin);
  assert.equal(s.suite, "X25519/AES-256-GCM");
  assert.equal(s.streams, true);
  const secret = "sealed-" + Math.random().toString(36).slice(2);
  const res = await s.fetch("/apiTest", json({ secret }));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  const body = await res.json();
  assert.deepEqual(body.requestData, { secret });
  assert.deepEqual(wire.slice(0, 4).map((e) => e.kind), ["config", "client-hello", "server-hello", "established"]);
  const req = wire.find((e) => e.kind === "request");
  const resp = wire.find((e) => e.kind === "response");
  assert.equal(req.headers["content-type"], "application/sessioncert-sealed");
  assert.ok(req.headers["sessioncert-confirm"], "the first request carries the key confirmation");
  assert.equal(req.bytes[0], 0x01);
  assert.ok(!has(req.bytes, secret) && !has(resp.bytes, secret), "plaintext on the wire");
  // A Request object and a URL work as with fetch().
  const viaRequest = await s.fetch(new Request(srv.base + "/apiTest", json({ via: "Request" })));
  assert.deepEqual((await viaRequest.json()).requestData, { via: "Request" });
  const viaUrl = await s.fetch(new URL("/apiTest", srv.base), json({ via: "URL" }));
  assert.deepEqual((await viaUrl.json()).requestData, { via: "URL" });
  // Only the first request carries the confirmation (a response opened since).
  const wire2 = wire.length;
  await (await s.fetch("/apiTest", json({ n: 2 }))).json();
  assert.equal(wire.slice(wire2).find((e) => e.kind === "request").headers["sessioncert-confirm"], undefined);
  await s.close();
});

test("wrong pin is refused with PinMismatch", async () => {
  const other = "ed25519:A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg";
  await assert.rejects(connect(srv.base, { pin: other }), (e) => e instanceof PinMismatch && e.expected === other && e.actual === srv.pin);
});

test("several pins (an identity rotation): any of them is accepted, none of them is refused", async () => {
  const fresh = () => "ed25519:" + generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x;
  const [other, other2] = [fresh(), fresh()];
  const s = await connect(srv.base, { pin: [other2, srv.pin] });
  assert.equal(s.pin, srv.pin);
  assert.equal((await (await s.fetch("/apiTest", json({ n: 1 }))).json()).requestData.n, 1);
  await assert.rejects(connect(srv.base, { pin: [other, other2] }), (e) =>
    e instanceof PinMismatch && e.expected === `${other},${other2}` && e.actual === srv.pin);
});

test("trust on first use connects and reports the pin", async () => {
  const warn = console.warn;
  let warned = "";
  console.warn = (m) => (warned += m);
  try {
    const s = await connect(srv.base, { tofu: true });
    assert.equal(s.pin, srv.pin);
    assert.match(warned, /first use/);
    await s.close();
  } finally { console.warn = warn; }
});

test("full mode hides method and path; JSON, notes resource, GET, DELETE", async () => {
  const wire = [];
  const s = await connect(srv.base, { pin: srv.pin, onWire: (e) => wire.push(e) });
  const res = await s.fetch("/apiTest", { ...json({ full: true }), full: true });
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).requestData, { full: true });
  const req = wire.find((e) => e.kind === "request");
  assert.ok(req.url.endsWith("/.well-known/sessioncert/full"));
  assert.equal(req.bytes[0], 0x02);
  assert.ok(!has(req.bytes, "/apiTest"));
  const created = await s.fetch("/notes", json({ title: "t1", body: "b1" }));
  assert.ok(created.status === 200 || created.status === 201, String(created.status));
  const note = await created.json();
  const list = await (await s.fetch("/notes")).json();
  assert.ok(JSON.stringify(list).includes("t1"));
  // HEAD carries both records in sessioncert-record (§13).
  const wireHead = wire.length;
  const head = await s.fetch(`/notes/${note.id}`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
  const headReq = wire.slice(wireHead).find((e) => e.kind === "request");
  assert.ok(headReq.headers["sessioncert-record"], "HEAD's record in the header");
  const del = await s.fetch(`/notes/${note.id}`, { method: "DELETE" });
  assert.ok(del.status < 300, String(del.status));
  const gone = await s.fetch(`/notes/${note.id}`);
  assert.equal(gone.status, 404);
  await s.close();
});

test("bodies: Blob, TypedArray, ArrayBuffer, FormData, URLSearchParams arrive intact", async () => {
  const s = await connect(srv.base, { pin: srv.pin });
  for (const body of [new Blob([JSON.stringify({ k: "blob" })], { type: "application/json" }), new TextEncoder().encode(JSON.stringify({ k: "u8" })), new TextEncoder().encode(JSON.stringify({ k: "ab" })).buffer]) {
    const r = await s.fetch("/apiTest", { method: "POST", headers: { "content-type": "application/json" }, body });
    assert.equal(r.status, 200);
    assert.match(JSON.stringify((await r.json()).requestData), /"k":"(blob|u8|ab)"/);
  }
  // Form bodies arrive byte for byte (stored by PUT /files and read back).
  const fd = new FormData();
  fd.set("field", "value-1");
  fd.set("file", new Blob(["file-content"], { type: "text/plain" }), "a.txt");
  const r1 = await s.fetch("/files/form.bin", { method: "PUT", body: fd });
  assert.ok(r1.ok, String(r1.status));
  const stored = await (await s.fetch("/files/form.bin")).text();
  assert.match(stored, /name="field"\r\n\r\nvalue-1\r\n/);
  assert.match(stored, /filename="a.txt"[\s\S]*file-content/);
  const r2 = await s.fetch("/files/form.txt", { method: "PUT", body: new URLSearchParams({ a: "1", b: "x y" }) });
  assert.equal((await r2.json()).sha256, createHash("sha256").update("a=1&b=x+y").digest("hex"));
  await s.close();
});

test("streamed upload (ReadableStream, 3 MiB) and streamed download via /files intact", async () => {
  const wire = [];
  const s = await connect(srv.base, { pin: srv.pin, onWire: (e) => wire.push(e) });
  const size = 3 * 1024 * 1024 + 12345;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, Math.min(size, i + 65536)));
  const sha = createHash("sha256").update(data).digest("hex");
  let produced = 0;
  const upload = new ReadableStream({
    pull(c) {
      if (produced >= size) return c.close();
      const n = Math.min(50_000, size - produced); // pieces that do not align with 64 KiB chunks
      c.enqueue(data.slice(produced, produced + n));
      produced += n;
    },
  });
  const put = await s.fetch("/files/big.bin", { method: "PUT", body: upload, headers: { "content-type": "application/octet-stream" } });
  assert.ok(put.status === 200 || put.status === 201, String(put.status));
  const stored = await put.json();
  assert.equal(stored.bytes, size);
  assert.equal(stored.sha256, sha);
  const up = wire.find((e) => e.kind === "request" && e.method === "PUT");
  assert.equal(up.streamed, true);
  assert.equal(up.bytes[0], 0x03, "a header-mode request stream");
  assert.ok(wire.filter((e) => e.kind === "request-chunk").length >= 48, "sent as many 64 KiB chunks");

  const get = await s.fetch("/files/big.bin");
  assert.equal(get.status, 200);
  const reader = get.body.getReader();
  const parts = [];
  let pieces = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pieces++;
    parts.push(value);
  }
  const got = Buffer.concat(parts);
  assert.equal(got.length, size);
  assert.equal(createHash("sha256").update(got).digest("hex"), sha);
  assert.ok(pieces > 10, `opened chunk by chunk (${pieces} pieces)`);
  assert.ok(wire.some((e) => e.kind === "response" && e.streamed), "the download came as a stream");
  await s.close();
});

test("full mode streams too: a ReadableStream upload as indeterminate-length Binary HTTP", async () => {
  const wire = [];
  const s = await connect(srv.base, { pin: srv.pin, full: true, onWire: (e) => wire.push(e) });
  const data = new Uint8Array(300_000).map((_, i) => (i * 13) & 255);
  let o = 0;
  const up = new ReadableStream({ pull(c) { if (o >= data.length) return c.close(); c.enqueue(data.slice(o, (o += 70_000))); } });
  const put = await s.fetch("/files/full.bin", { method: "PUT", body: up });
  const stored = await put.json();
  assert.equal(stored.sha256, createHash("sha256").update(data).digest("hex"));
  const req = wire.find((e) => e.kind === "request");
  assert.equal(req.bytes[0], 0x04, "a full-mode request stream");
  assert.ok(req.url.endsWith("/.well-known/sessioncert/full"));
  await s.close();
});

test("a handshake refused as unknown_key refetches the configuration once", async () => {
  let refusals = 0, configs = 0;
  const f = async (url, init) => {
    if (String(url).endsWith("/config")) configs++;
    if (String(url).endsWith("/handshake") && refusals++ === 0)
      return new Response('{"error":"unknown_key"}', { status: 400, headers: { "sessioncert-error": "unknown_key" } });
    return fetch(url, init);
  };
  const s = await connect(srv.base, { pin: srv.pin, fetch: f });
  assert.equal(refusals, 2);
  assert.equal(configs, 2, "the cached configuration was not trusted again");
  await s.close();
});

test("server-sent events arrive one by one", async () => {
  const s = await connect(srv.base, { pin: srv.pin });
  const t0 = Date.now();
  const seen = [];
  for await (const ev of s.events("/events?n=4&interval_ms=250")) seen.push({ ...ev, at: Date.now() - t0 });
  assert.deepEqual(seen.map((e) => JSON.parse(e.data).i), [0, 1, 2, 3]);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i].at - seen[i - 1].at >= 150, `event ${i} came ${seen[i].at - seen[i - 1].at} ms after the previous one`);
  assert.ok(seen[3].at - seen[0].at >= 600, "not delivered all at once at the end");
  console.log("# event arrival (ms):", seen.map((e) => e.at).join(", "));
  await s.close();
});

test("a replayed sealed request is refused by the server", async () => {
  const { f, sent } = recordingFetch();
  const s = await connect(srv.base, { pin: srv.pin, fetch: f });
  const r = await s.fetch("/apiTest", json({ once: 1 }));
  assert.equal(r.status, 200);
  await r.arrayBuffer();
  const orig = sent.find((e) => e.url.endsWith("/apiTest"));
  const replay = await fetch(orig.url, { method: "POST", headers: orig.headers, body: orig.body });
  assert.equal(replay.status, 400);
  assert.equal(replay.headers.get("sessioncert-error"), "rejected");
  await s.close();
});

test("concurrent fetches on one session each get their own answer", async () => {
  const s = await connect(srv.base, { pin: srv.pin });
  const results = await Promise.all(Array.from({ length: 24 }, (_, i) => s.fetch("/apiTest", json({ i })).then((r) => r.json())));
  results.forEach((b, i) => assert.deepEqual(b.requestData, { i }));
  await s.close();
});

test("close(): the server refuses the session afterwards and the session object is done", async () => {
  const { f, sent } = recordingFetch();
  const wire = [];
  const s = await connect(srv.base, { pin: srv.pin, fetch: f, onWire: (e) => wire.push(e) });
  await (await s.fetch("/apiTest", json({ a: 1 }))).arrayBuffer();
  const id = s.id;
  await s.close();
  assert.deepEqual(wire.at(-1), { kind: "closed", sessionId: id });
  const closeReq = sent.find((e) => e.url.endsWith("/.well-known/sessioncert/close"));
  assert.ok(closeReq, "a sealed close was sent");
  const orig = sent.find((e) => e.url.endsWith("/apiTest"));
  const again = await fetch(orig.url, { method: "POST", headers: orig.headers, body: orig.body });
  assert.equal(again.status, 401);
  assert.equal(again.headers.get("sessioncert-error"), "session_closed");
  await assert.rejects(s.fetch("/apiTest", json({})), (e) => e instanceof SessionCertError && e.code === "session_closed");
});

test("retry rules: an operator close gives a tagged refusal, and the POST is re-sent once on a new session", async () => {
  const wire = [];
  const s = await connect(srv.base, { pin: srv.pin, onWire: (e) => wire.push(e) });
  await (await s.fetch("/apiTest", json({ a: 1 }))).arrayBuffer();
  const first = s.id;
  execFileSync(BIN, ["sessions", "close", first, "--data", srv.data]);
  let res;
  for (let i = 0; i < 40; i++) {
    // The running server picks the close up within about a second.
    await new Promise((r) => setTimeout(r, 100));
    if (i === 20) break;
  }
  res = await s.fetch("/apiTest", json({ after: "close" }));
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).requestData, { after: "close" });
  assert.notEqual(s.id, first, "a fresh handshake");
  const refusal = wire.find((e) => e.kind === "response" && e.status === 401);
  assert.ok(refusal, "the server refused the old session");
  assert.ok(refusal.headers["sessioncert-refusal"], "with a refusal tag");
  assert.equal(wire.filter((e) => e.kind === "established").length, 2);
  await s.close();
});

test("retry rules: an untagged (forgeable) refusal of a POST is OutcomeUnknown; a GET is re-sent once", async () => {
  let forge = null;
  const forged = (code) => new Response(JSON.stringify({ error: code, message: "forged" }), { status: 401, headers: { "sessioncert-error": code, "content-type": "application/json" } });
  const { f } = recordingFetch((e) => {
    if (forge && e.url.includes(forge.path)) { const r = forged(forge.code); forge.count = (forge.count ?? 0) + 1; if (forge.once) forge = null; return r; }
  });
  const wire = [];
  const s = await connect(srv.base, { pin: srv.pin, fetch: f, onWire: (e) => wire.push(e) });
  forge = { path: "/apiTest", code: "session_expired" };
  await assert.rejects(s.fetch("/apiTest", json({ x: 1 })), (e) => {
    assert.ok(e instanceof OutcomeUnknown, e.message);
    assert.equal(e.method, "POST");
    assert.equal(e.settled, true, "the sealed close went through: nothing held can run later");
    return true;
  });
  forge = null;
  // GET (sent in full mode) is idempotent: one fresh handshake, sent once more.
  await (await s.fetch("/notes")).arrayBuffer(); // the session after the unknown outcome is a new one
  const before = wire.filter((e) => e.kind === "established").length;
  forge = { path: "/.well-known/sessioncert/full", code: "unknown_session", once: true };
  const r = await s.fetch("/notes");
  assert.equal(r.status, 200);
  assert.equal(wire.filter((e) => e.kind === "established").length, before + 1);
  // A POST marked idempotent is re-sent too; refused twice it is SessionExpired, not a third try.
  forge = { path: "/apiTest", code: "session_closed" };
  await assert.rejects(s.fetch("/apiTest", { ...json({ y: 1 }), idempotent: true }), (e) => e.name === "SessionExpired" && e.code === "session_closed");
  assert.equal(forge.count, 2, "sent exactly twice");
  forge = null;
  await s.close();
});

test("AbortSignal aborts a sealed request", async () => {
  const s = await connect(srv.base, { pin: srv.pin });
  const ac = new AbortController();
  const p = s.fetch("/events?n=100&interval_ms=100", { signal: ac.signal }).then(async (r) => { for await (const _ of r.body) ac.abort(); });
  await assert.rejects(p, (e) => e.name === "AbortError");
  await s.close();
});
